"""The PyTorch reference problem, run by pg: one RLOO update of a SmolLM2-135M-shaped Llama.

`REFERENCE` holds what a plain PyTorch + `transformers` loop (`LlamaForCausalLM` of that shape,
random weights, 2 threads) measured on this machine for the problem of
`configs/bench_smollm2_reference.py`: 8 prompts × 4 samples, 32-token prompts, 32 generated
tokens,
temperature 1, reward = the share of generated tokens equal to a fixed id, leave-one-out
baseline, one AdamW step per iteration. `rows` measures pg on the same problem
(`pg.bench.llm.measure`: seconds per update, the sampler's share, generated tokens per second,
model FLOP/s as a share of the float32 matmul peak measured in the same run) in float32, in
bfloat16, and with a bfloat16 sampler beside a float32 trainer (the log-prob mismatch between
them); `comparison` sets each against the reference and the target of twice its speed.
"""

from __future__ import annotations

from pg.bench import llm
from pg.bench.train import changed

# The reference loop on this machine (2-core CPU, float32 matmul peak about 205 GFLOP/s).
REFERENCE = {"s/update": 27.6, "generation s": 8.6, "training s": 19.0, "tokens/s": 37.0,
             "model GFLOP/s": 78.0}
TARGET_SPEEDUP = 2.0


def problems(config):
  """(label, config) per row: float32, bfloat16, and a bfloat16 sampler with a float32
  trainer."""
  return [("float32", changed(config, **{"model.dtype": "float32"})),
          ("bfloat16", changed(config, **{"model.dtype": "bfloat16"})),
          ("float32, bfloat16 sampler", changed(config, **{"model.dtype": "float32",
                                                          "sampler_dtype": "bfloat16"}))]


def rows(config, *, repeats: int, peak: float, on_row=None, which=None) -> list[dict]:
  """`pg.bench.llm.measure` for each of `problems(config)` (or those labelled in `which`)."""
  out = []
  for label, row_config in problems(config):
    if which and label not in which:
      continue
    out.append(llm.measure(row_config, repeats=repeats, peak=peak,
                           label="SmolLM2-135M-shaped, random"))
    out[-1]["row"] = label
    if on_row is not None:
      on_row(out[-1])
    llm.release_memory()
  return out


def comparison(rows_) -> list[str]:
  """One line per row: its time against the reference's and the target's."""
  target = REFERENCE["s/update"] / TARGET_SPEEDUP
  lines = []
  for r in rows_:
    s = r["s/update"]
    lines.append(f"- {r['row']}: {s:.2f} s/update, {REFERENCE['s/update'] / s:.2f}× the "
                 f"PyTorch loop's {REFERENCE['s/update']} s (target ≤ {target:.1f} s: "
                 f"{'met' if s <= target else 'not met'}); sampling {r['sampling s']:.2f} s "
                 f"against its {REFERENCE['generation s']} s, the rest {s - r['sampling s']:.2f} s "
                 f"against its training {REFERENCE['training s']} s")
  return lines


def breakdown(config, *, repeats: int) -> dict:
  """Where an update's time goes: its parts, each jitted alone with the update's sizes and
  timed (median of `repeats` calls after a warm-up): the sampler (prefill and decoding), the
  trainer's forward pass alone (log-probs; the plain on-policy update does not run it, a
  sampler in another dtype or a critic does), the loss's gradient (forward and backward), and
  the optimizer (clipping and AdamW). The whole update less these is scoring, advantages and
  the program's own overhead."""
  import statistics

  import jax
  import jax.numpy as jnp
  import optax

  from pg import train
  from pg.bench.timing import call_times
  from pg.train.build import aggregation, shares_prompts
  from pg.train.loss import make_loss
  from pg.train.optim import optimizer

  group = llm.build_group(config)
  config, task, policy = group.config, group.task, group.policy
  runs = train.seed_runs(config)
  init, chunk = train.make_programs(config, task, policy)
  state = init(runs.keys, runs.hp)
  N, G = config.num_prompts, config.group_size
  median = lambda fn, *args: statistics.median(call_times(fn, *args, repeats=repeats)[0])
  prompts_RxNxP = jax.vmap(lambda k: task.sample_prompts(k, N))(runs.keys)
  sample = llm.sampler_program(group)
  args = (state.params, prompts_RxNxP, runs.keys, state.hp["temperature"])
  out = {"sampler": median(sample, *args)}
  s = sample(*args)
  forward, loss_fn = make_loss(config, policy, aggregation(config),
                               shares_prompts(config, policy), task.prompt_mask)
  prompts_RxBxP = jnp.repeat(prompts_RxNxP, G, axis=1)
  fwd = jax.jit(jax.vmap(lambda p, pr, tok, temp: forward(p, pr, tok, temp)[0]))
  out["trainer forward"] = median(fwd, state.params, prompts_RxBxP, s.tokens_BxT,
                                  state.hp["temperature"])
  adv = jax.random.normal(jax.random.PRNGKey(0), s.mask_BxT.shape) * s.mask_BxT
  batch = {"prompts": prompts_RxBxP, "tokens": s.tokens_BxT, "mask": s.mask_BxT,
           "old_logp": s.logp_BxT, "advantages": adv,
           "loss_key": jax.vmap(lambda k: jax.random.split(k, s.mask_BxT.shape[1]))(runs.keys)}
  grad = jax.jit(jax.vmap(lambda p, b, hp: jax.grad(lambda q: loss_fn(q, b, hp)[0])(p)))
  out["gradient"] = median(grad, state.params, batch, state.hp)
  grads = grad(state.params, batch, state.hp)

  def step(params, g, opt_state, hp):
    updates, opt_state = optimizer(hp, config.max_grad_norm).update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
  out["optimizer"] = median(jax.jit(jax.vmap(step)), state.params, grads, state.opt_state,
                            state.hp)
  return out


def early_stop(config, *, repeats: int, greedy: bool = False) -> dict:
  """The sampler on `config`'s task with and without stopping once every row has ended
  (`pg.policy.sampler.sample(stop_early=...)`): seconds of each (median of `repeats` calls
  after a warm-up), the responses' mean length and the share of rows that ended."""
  import statistics

  import jax
  import numpy as np

  from pg import train
  from pg.bench.timing import call_times

  group = llm.build_group(config)
  config, task, policy = group.config, group.task, group.policy
  runs = train.seed_runs(config)
  init, _ = train.make_programs(config, task, policy)
  state = init(runs.keys, runs.hp)
  prompts = jax.vmap(lambda k: task.sample_prompts(k, config.num_prompts))(runs.keys)
  args = (state.params, prompts, runs.keys, state.hp["temperature"])
  out = {"max_new_tokens": task.max_new_tokens}
  for early in (True, False):
    times, s = call_times(llm.sampler_program(group, stop_early=early, greedy=greedy), *args,
                          repeats=repeats)
    out["stop early s" if early else "every step s"] = statistics.median(times)
  lengths = np.asarray(s.mask_BxT).sum(-1)
  out["mean length"] = float(lengths.mean())
  out["longest"] = int(lengths.max())
  out["ended share"] = float(1 - np.asarray(s.truncated_B).mean())
  return out


def bandwidth(n_bytes: int = 2**30, repeats: int = 10) -> float:
  """Bytes per second this device moves in `x * 2` over a float32 array of `n_bytes` (one read
  and one write per element), the best of `repeats`: the memory bandwidth a decode step is
  held to."""
  import jax
  import jax.numpy as jnp

  from pg.bench.timing import best_time
  x = jnp.ones((n_bytes // 4,), jnp.float32)
  return 2 * n_bytes / best_time(jax.jit(lambda a: a * 2), x, repeats=repeats)


def bf16_peak(n: int, repeats: int = 10) -> float:
  """Best bfloat16 matmul FLOP/s of this device (float32 accumulation), measured now."""
  import jax
  import jax.numpy as jnp

  from pg.bench.timing import best_time
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.bfloat16)
  f = jax.jit(lambda a: jnp.dot(a, a, preferred_element_type=jnp.float32))
  return 2 * n ** 3 / best_time(f, a, repeats=repeats)


def sampler_bytes_per_step(config, task, policy) -> float:
  """Bytes a decode step must move at least: every weight once (float32 storage, cast to the
  compute dtype as read), the KV cache it attends over (averaged over the steps; compute
  dtype), and the `[B, V]` float32 logits written."""
  import math

  import jax

  from pg.policy import abstract_params
  B = config.num_prompts * config.group_size * config.num_seeds
  weights = sum(math.prod(x.shape) * 4 for x in jax.tree_util.tree_leaves(
      abstract_params(policy)))
  c = policy.cfg
  item = 2 if c.dtype == "bfloat16" else 4
  P, T = task.prompt_len, task.max_new_tokens
  mean_positions = P + (T + 1) / 2
  cache = B * c.num_layers * 2 * c.num_kv_heads * c.dim_per_head * mean_positions * item
  return float(weights + cache + B * c.vocab_size * 4)


def accelerator_rows(config, *, repeats: int, models=("smollm2", "qwen0.5b")) -> list[dict]:
  """The problem on this device for each model (the config's SmolLM2 shape and a
  Qwen2.5-0.5B shape, random weights) in float32 and bfloat16: tokens per second, the
  training phase's model FLOP/s (3 × the forward FLOPs of the trained tokens over the
  gradient's seconds, timed alone) as shares of the bfloat16 and the float32 (TF32 on a recent
  GPU) matmul peaks measured now, and the sampler's bytes per decode step over the step's time
  as a share of the memory bandwidth measured now."""
  from pg.bench.train import matmul_peak
  from pg.train import flops
  n = 8192 if llm.jax.default_backend() != "cpu" else 2048
  peaks = {"f32": matmul_peak(n), "bf16": bf16_peak(n)}
  bw = bandwidth()
  shapes = {"smollm2": config,
            "qwen0.5b": changed(config, model={"name": "llama", **llm.QWEN2_5_0_5B.options},
                                **{"task.options.vocab_size": llm.QWEN2_5_0_5B.vocab_size})}
  out = []
  for name in models:
    for dtype in ("float32", "bfloat16"):
      c = changed(shapes[name], **{"model.dtype": dtype})
      row = llm.measure(c, repeats=repeats, peak=peaks["f32"], label=name)
      parts = breakdown(c, repeats=repeats)
      group = llm.build_group(c)
      total = flops.update_flops(c, group.task, group.policy)
      training = total - flops.sampling_flops(c, group.task, group.policy)
      train_rate = training / parts["gradient"]
      step_s = parts["sampler"] / group.task.max_new_tokens
      moved = sampler_bytes_per_step(c, group.task, group.policy)
      row.update({"row": f"{name} {dtype}", "gradient s": parts["gradient"],
                  "training TFLOP/s": train_rate / 1e12,
                  "% of bf16 peak": 100 * train_rate / peaks["bf16"],
                  "% of f32/TF32 peak": 100 * train_rate / peaks["f32"],
                  "sampler GB/step": moved / 1e9,
                  "% of bandwidth": 100 * moved / step_s / bw})
      out.append(row)
      llm.release_memory()
  for r in out:
    r.update({"bf16 peak TFLOP/s": peaks["bf16"] / 1e12, "f32 peak TFLOP/s": peaks["f32"] / 1e12,
              "bandwidth GB/s": bw / 1e9})
  return out


ACCELERATOR_COLUMNS = ("row", "s/update", "sampling s", "tokens/s", "gradient s",
                       "training TFLOP/s", "% of bf16 peak", "% of f32/TF32 peak",
                       "sampler GB/step", "% of bandwidth")


def report(config, *, repeats: int, peak_size: int = 0, rows_which=None,
           breakdown_parts: bool = False, early_stop_config=None, early_stop_name: str = "",
           early_stop_greedy: bool = False, accelerator=None, report_path: str = "",
           command: str = "") -> str:
  """What `experiments/bench_train.py --reference` prints and writes (see its flags): the rows
  against the reference, the mismatch, the update's parts, the early-stop check; or, with
  `accelerator` (a list of model names, empty for both), the accelerator table. Returns the
  text."""
  import time

  from pg.run.tables import markdown_table
  start = time.perf_counter()
  head = llm.header(config)
  print(head, flush=True)
  peak, peak_line = llm.float32_peak(peak_size)
  print(peak_line + "\n", flush=True)
  if accelerator is not None:
    acc = accelerator_rows(config, repeats=repeats,
                           models=tuple(accelerator) or ("smollm2", "qwen0.5b"))
    a = acc[0]
    cell = lambda x: f"{x:.3g}" if isinstance(x, float) else str(x)
    table = markdown_table(ACCELERATOR_COLUMNS,
                           [[cell(r[c]) for c in ACCELERATOR_COLUMNS] for r in acc])
    text = (f"{table}\n\nmeasured now: bf16 matmul peak {a['bf16 peak TFLOP/s']:.1f} TFLOP/s, "
            f"float32 (default precision) {a['f32 peak TFLOP/s']:.1f} TFLOP/s, memory "
            f"bandwidth {a['bandwidth GB/s']:.0f} GB/s")
    print(text, flush=True)
    if report_path:
      with open(report_path, "w", encoding="utf-8") as f:
        f.write(f"# The reference problem on {head.splitlines()[0]}\n\n`{command}`\n\n{text}\n")
    return text
  measured = [] if rows_which == ("none",) else rows(
      config, repeats=repeats, peak=peak, which=rows_which,
      on_row=lambda r: print(f"measured {r['row']}: {r['s/update']:.3g} s/update", flush=True))
  lines = [llm.table(measured), "", *comparison(measured)] if measured else []
  for r in measured:
    if "mismatch |Δ log π|" in r:
      lines.append(f"- {r['row']}: mean |Δ log π| between the bfloat16 sampler and the float32 "
                   f"trainer {r['mismatch |Δ log π|']:.4f} per token; tokens with ρ outside "
                   f"[0.5, 2]: {100 * r['ρ outside [0.5, 2]']:.2f}%")
  if breakdown_parts:
    parts = breakdown(config, repeats=repeats)
    whole = next((r["s/update"] for r in measured if r["row"] == "float32"), None)
    lines.append(f"\nfloat32 update, its parts jitted alone (median of {repeats}): "
                 + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items())
                 + (f"; the whole update {whole:.2f} s" if whole else ""))
  if early_stop_config is not None:
    c = early_stop_config
    e = early_stop(c, repeats=repeats, greedy=early_stop_greedy)
    how = "greedy" if early_stop_greedy else f"sampled at temperature {c.hparams.temperature}"
    lines.append(f"\nthe sampler ({how}) on {early_stop_name}'s task ({c.num_prompts} prompts × "
                 f"{c.group_size} samples, max_new_tokens {e['max_new_tokens']}): responses "
                 f"{e['mean length']:.1f} tokens on average, the longest {e['longest']}, "
                 f"{100 * e['ended share']:.0f}% ended; {e['stop early s']:.2f} s stopping once "
                 f"every row has ended against {e['every step s']:.2f} s running every step "
                 f"({e['every step s'] / e['stop early s']:.1f}×)")
  wall = time.perf_counter() - start
  text = "\n".join(lines)
  print(f"\n{text}\n\nwall time {wall:.0f} s", flush=True)
  if report_path:
    with open(report_path, "w", encoding="utf-8") as f:
      f.write(f"# The PyTorch reference problem, run by pg\n\n`{command}`, {wall:.0f} s wall "
              f"time.\n\n- {head.strip().replace(chr(10), chr(10) + '- ')}\n- {peak_line}\n- the "
              f"reference (PyTorch + transformers, 2 threads, this machine): "
              f"{REFERENCE['s/update']} s per iteration (generation {REFERENCE['generation s']} "
              f"s, training {REFERENCE['training s']} s), {REFERENCE['tokens/s']:.0f} generated "
              f"tokens/s, about {REFERENCE['model GFLOP/s']:.0f} GFLOP/s of model work\n\n"
              f"{text}\n")
    print(f"wrote {report_path}")
  return text
