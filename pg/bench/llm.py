"""One RL update of a real language model (SmolLM2-135M), per compute dtype.

`run(config, dtypes, ...)` measures, per row (a model in one compute dtype; parameters stay
float32), the whole compiled update of `config` (sample → score → advantages → loss → AdamW,
`pg.train.make_programs`):

- seconds per update: the median of `repeats` timed chunks after a warm-up one;
- generated tokens per second (response tokens actually produced, over all rows and seeds);
- sampling seconds and share: `pg.policy.sampler.sample` alone, jitted with the update's sizes,
  params, temperature and compiler options (median of `repeats` calls after a warm-up), over the
  update's seconds; the rest is scoring, advantages, the trainer's forward and backward and the
  optimizer;
- model FLOP/s (`pg.train.flops`) and its share of a float32 matmul peak measured in the same
  run (`pg.bench.train.matmul_peak`; the bfloat16 rows are held to the same float32 peak);
- load seconds (building the programs, which reads and dequantises the checkpoint), compile
  seconds of the chunk program and of the sampler alone;
- XLA's temporary memory for the chunk program, and the process's peak resident memory during
  the row (Linux: VmHWM, reset as the row starts after the last row's memory is released, so it
  counts what the process still holds then but not an earlier row's peak; elsewhere the
  process's peak so far).

`random_models(when)`: on a GPU, a Qwen2.5-0.5B-shaped model with random weights
(`QWEN2_5_0_5B`) joins the rows; `when` = "always" / "never" overrides.
"""

from __future__ import annotations

import ctypes
import gc
import math
import os
import platform
import resource
import statistics
from typing import NamedTuple

import jax
import numpy as np

from pg import train
from pg.bench.timing import call_times, chunk_times, timed
from pg.bench.train import build_group, changed, matmul_peak
from pg.policy import base as policy_base
from pg.policy import sampler
from pg.run.tables import markdown_table
from pg.train import flops

DTYPES = ("float32", "bfloat16")
RANDOM_MODEL_WHEN = ("gpu", "always", "never")


class RandomModel(NamedTuple):
  """A "llama" architecture with random weights: `config.model` options and the vocabulary."""
  label: str
  options: dict
  vocab_size: int


# Qwen2.5-0.5B's shape (Qwen/Qwen2.5-0.5B config.json): 494M parameters, tied embeddings.
QWEN2_5_0_5B = RandomModel(
    "Qwen2.5-0.5B-shaped, random weights",
    {"num_layers": 24, "d_model": 896, "num_heads": 14, "num_kv_heads": 2, "mlp_dim": 4864,
     "tie_embeddings": True, "qkv_bias": True, "rope_theta": 1e6, "rms_eps": 1e-6},
    151936)

COLUMNS = ("model", "dtype", "params M", "B", "P", "T", "s/update", "sampling s",
           "sampling share", "tokens/s", "model GFLOP/s", "% of f32 peak", "load s",
           "compile s", "sampler compile s", "temp MiB", "peak RSS MiB")


def model_label(config) -> str:
  """The checkpoint's file or folder name, or "random L×D" for a model without one."""
  path = config.model.get("init_from")
  if path:
    return os.path.basename(os.path.normpath(path))
  return f"random {config.model.get('num_layers')}L×{config.model.get('d_model')}"


def random_models(when: str = "gpu", backend: str | None = None) -> list[RandomModel]:
  """[QWEN2_5_0_5B] on a GPU (`when` "gpu"), or as "always" / "never" say."""
  if when not in RANDOM_MODEL_WHEN:
    raise ValueError(f"random_model must be one of {RANDOM_MODEL_WHEN}, got {when!r}.")
  backend = backend or jax.default_backend()
  return [QWEN2_5_0_5B] if when == "always" or (when == "gpu" and backend == "gpu") else []


def problems(config, dtypes, random=()) -> list[tuple[str, object]]:
  """(model label, config) per row: `config`'s model in each dtype, then each `RandomModel` in
  each dtype (its options replace config.model, its vocabulary the task's)."""
  for d in dtypes:
    if d not in DTYPES:
      raise ValueError(f"dtypes: {d!r} is not one of {DTYPES}.")
  rows = [(model_label(config), changed(config, **{"model.dtype": d})) for d in dtypes]
  for model in random:
    shaped = changed(config, model={"name": "llama", **model.options},
                     **{"task.options.vocab_size": model.vocab_size})
    rows += [(model.label, changed(shaped, **{"model.dtype": d})) for d in dtypes]
  return rows


def check(config, dtypes=DTYPES) -> None:
  """Builds every row's task and policy (`pg.train.build`: the checkpoint's metadata, not its
  weights), so a bad config or a missing checkpoint is refused before anything is timed."""
  for _, row_config in problems(config, dtypes):
    build_group(row_config)


def reset_peak_rss() -> bool:
  """Resets the kernel's peak-RSS mark of this process (Linux); False where it cannot."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _status_mib(field: str) -> float:
  """A `/proc/self/status` memory field ("VmRSS", "VmHWM") in MiB; NaN where there is none."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(f"{field}:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return float("nan")


def rss_mib() -> float:
  """The process's resident memory now (Linux VmRSS; NaN elsewhere)."""
  return _status_mib("VmRSS")


def peak_rss_mib() -> float:
  """The process's peak resident memory: VmHWM (since the last reset) or ru_maxrss."""
  peak = _status_mib("VmHWM")
  if not math.isnan(peak):
    return peak
  scale = 1 if platform.system() == "Darwin" else 1024  # bytes on macOS, KiB on Linux
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def float32_peak(size: int = 0) -> tuple[float, str]:
  """`(FLOP/s, line)`: `matmul_peak` of a size² matmul (0: 2048 on a CPU, 8192 on an
  accelerator) and the line that reports it."""
  n = size or (2048 if jax.default_backend() == "cpu" else 8192)
  peak = matmul_peak(n)
  return peak, (f"float32 matmul peak measured now: {peak / 1e9:,.0f} GFLOP/s ({n}² @ {n}², "
                f"best of 10, default precision)")


def sampler_program(group, stop_early: bool = True, greedy: bool = False):
  """The sampler alone, as the train step calls it, vmapped over runs:
  `(params_R, prompts_RxNxP, keys_R, temperature_R) -> Samples`, jitted with the step's compiler
  options."""
  config, task, policy = group.config, group.task, group.policy
  if config.get("sampler_dtype"):  # the sampler the step runs: another compute dtype
    policy = policy_base.with_compute_dtype(policy, config.sampler_dtype)

  def sample(params, prompts_NxP, key, temperature):
    return sampler.sample(policy, params, prompts_NxP, key, max_new_tokens=task.max_new_tokens,
                          eos_id=task.eos_id, pad_id=task.pad_id, temperature=temperature,
                          group_size=config.group_size, prompt_mask_NxP=task.prompt_mask(
                              prompts_NxP), eos_ids=task.eos_ids, stop_early=stop_early,
                          greedy=greedy)
  return jax.jit(jax.vmap(sample), compiler_options=train.compiler_options())


def measure(config, *, repeats: int, peak: float, label: str | None = None) -> dict:
  """One row (see the module docstring) for `config` (its num_seeds runs side by side)."""
  reset_peak_rss()
  start_rss = rss_mib()
  group = build_group(config)
  config, task, policy = group.config, group.task, group.policy
  runs = train.seed_runs(config)
  (init, chunk), load_s = timed(train.make_programs, config, task, policy)
  compiled, compile_s = timed(lambda: chunk.lower(jax.eval_shape(init, runs.keys,
                                                                 runs.hp)).compile())
  temp_mib = compiled.memory_analysis().temp_size_in_bytes / 2**20
  times, metrics, state = chunk_times(compiled, init(runs.keys, runs.hp), repeats)
  del init, chunk, compiled
  seconds = statistics.median(times)
  K, R = config.updates_per_chunk, config.num_seeds
  B = config.num_prompts * config.group_size
  tokens = [float(np.asarray(m["response_length"]).sum()) * B for m in metrics]  # runs, updates

  prompts_RxNxP = jax.vmap(lambda k: task.sample_prompts(k, config.num_prompts))(runs.keys)
  args = (state.params, prompts_RxNxP, runs.keys, state.hp["temperature"])
  sample, sampler_compile_s = timed(lambda: sampler_program(group).lower(*args).compile())
  sampling_times, _ = call_times(sample, *args, repeats=repeats)
  sampling_s = statistics.median(sampling_times)
  del state, sample, args

  # A sampler in another dtype than the trainer (config.sampler_dtype): the log-prob mismatch
  # the step measures (`pg.core.rollout_correction.diagnostics`), over the timed updates.
  mismatch = {name: float(np.mean([np.asarray(m[key]) for m in metrics]))
              for name, key in (("mismatch |Δ log π|", "mismatch_abs_logp"),
                                ("ρ outside [0.5, 2]", "mismatch_ratio_outside"))
              if key in metrics[0]}
  n_params = sum(math.prod(x.shape) for x in
                 jax.tree_util.tree_leaves(policy_base.abstract_params(policy)))
  model_flops = flops.update_flops(config, task, policy) * R * K
  return {
      "model": label or model_label(config),
      "dtype": config.model.get("dtype", "float32") + (
          f", {config.sampler_dtype} sampler" if config.get("sampler_dtype") else ""),
      "params M": n_params / 1e6,
      "B": R * B,
      "P": task.prompt_len,
      "T": task.max_new_tokens,
      "s/update": seconds / K,
      "sampling s": sampling_s,
      "sampling share": sampling_s / (seconds / K),
      "tokens/s": statistics.median(tokens) / seconds,
      "model GFLOP/s": model_flops / seconds / 1e9,
      "% of f32 peak": 100 * model_flops / seconds / peak,
      "load s": load_s,
      "compile s": compile_s,
      "sampler compile s": sampler_compile_s,
      "temp MiB": temp_mib,
      "peak RSS MiB": peak_rss_mib(),
      "start RSS MiB": start_rss,  # what the process held as the row began
      "update times": [t / K for t in times],  # each timed chunk's seconds per update
      "sampling times": sampling_times,
      **mismatch,
  }


def run(config, dtypes=DTYPES, *, repeats: int, peak: float, random=(), on_row=None):
  """`measure` for every row of `problems(config, dtypes, random)`; `on_row(row)` is called as
  each finishes. Memory is released between rows (`release_memory`)."""
  rows = []
  for label, row_config in problems(config, dtypes, random):
    rows.append(measure(row_config, repeats=repeats, peak=peak, label=label))
    if on_row is not None:
      on_row(rows[-1])
    release_memory()
  return rows


def release_memory() -> None:
  """Drops what the last row left: garbage, JAX's caches, and (glibc) the freed heap the
  allocator keeps, so the next row's peak RSS starts near the process's baseline."""
  gc.collect()
  jax.clear_caches()
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):  # not glibc
    pass


def _fmt(key, x):
  if key == "sampling share":
    return f"{100 * x:.0f}%"
  if isinstance(x, float):
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"
  return str(x)


def table(rows) -> str:
  """The rows as a markdown table, one column per `COLUMNS` entry (a row's other keys, the
  timed calls' seconds, are left out)."""
  return markdown_table(COLUMNS, [[_fmt(k, r[k]) for k in COLUMNS] for r in rows])


def cpu_name() -> str:
  """The CPU's model name and its bfloat16 instruction sets (Linux), else platform's name."""
  try:
    with open("/proc/cpuinfo") as f:
      info = f.read()
  except OSError:
    return platform.processor() or platform.machine()
  name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
               if line.startswith("model name")), platform.machine())
  flags = next((line.split(":", 1)[1].split() for line in info.splitlines()
                if line.startswith("flags")), [])
  bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
  return f"{name} ({', '.join(bf16) or 'no bfloat16 instructions'})"


def header(config) -> str:
  """The machine and the problem: what a report opens with."""
  device = jax.devices()[0]
  opts = config.task.options
  B = config.num_prompts * config.group_size
  return (f"jax {jax.__version__}, backend {jax.default_backend()} ({device.device_kind}), "
          f"{cpu_name()}, {os.cpu_count()} CPU cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, "
          f"load average {os.getloadavg()[0]:.2f}\n"
          f"task {config.task.name} (vocabulary {opts.get('vocab_size')}): "
          f"{config.num_seeds} seed(s) × {config.num_prompts} prompts × {config.group_size} "
          f"samples = B {config.num_seeds * B} rows, prompts of P = {opts.get('prompt_len')} "
          f"tokens, responses of T = {opts.get('length')}; {config.advantage}, "
          f"{config.ppo_epochs} epoch(s) × {config.num_minibatches} minibatch(es), "
          f"{config.updates_per_chunk} update(s) per chunk\n")


def spreads(rows) -> list[str]:
  """Per row, one line: every timed update's and sampler call's seconds (the medians' spread)
  and the resident memory the row started from."""
  seconds = lambda xs: ", ".join(f"{x:.3g}" for x in xs)
  return [f"{r['model']} {r['dtype']}: updates {seconds(r['update times'])} s; sampler "
          f"{seconds(r['sampling times'])} s; resident memory as the row began "
          f"{r['start RSS MiB']:,.0f} MiB" for r in rows]


def dtype_comparison(rows) -> list[str]:
  """Per model measured in both dtypes, one sentence: bfloat16's times against float32's."""
  out = []
  for model in dict.fromkeys(r["model"] for r in rows):
    by = {r["dtype"]: r for r in rows if r["model"] == model}
    if set(DTYPES) <= set(by):
      f32, bf16 = by["float32"], by["bfloat16"]
      ratio = lambda k: bf16[k] / f32[k]
      rest = lambda r: max(r["s/update"] - r["sampling s"], 1e-12)
      out.append(f"{model}: bfloat16 takes {ratio('s/update'):.2f}× float32's time per update "
                 f"({ratio('sampling s'):.2f}× in the sampler, {rest(bf16) / rest(f32):.2f}× "
                 f"in the rest), {ratio('compile s'):.2f}× its compile time and "
                 f"{ratio('temp MiB'):.2f}× its XLA temporary memory.")
  return out


def markdown_report(rows, head: str, peak_line: str, command: str, wall_s: float,
                    repeats: int) -> str:
  """The report file: the command, the machine and problem, the table and how it is measured."""
  lines = [
      "# One RL update of a real model: speed and memory", "",
      "Written by `experiments/bench_llm.py` (`pg.bench.llm`); rerun to regenerate.", "",
      "```bash", command, "```", "",
      *[f"- {line}" for line in head.strip().splitlines()], f"- {peak_line}",
      f"- this run: {wall_s:.0f} s wall time, compile included; load average at the end "
      f"{os.getloadavg()[0]:.2f}", "",
      table(rows), "",
      *[f"- {line}" for line in dtype_comparison(rows)], "",
      "Every timed call (the medians above are theirs), and the memory each row started from:",
      "",
      *[f"- {line}" for line in spreads(rows)], "",
      "How each column is measured:", "",
      f"- **s/update**: the median of {repeats} timed chunks of the whole compiled program "
      f"(sample → score → advantages → loss → AdamW; `config.updates_per_chunk` updates each) "
      f"after one warm-up chunk, over its updates. **B**: rows (prompts × samples × seeds), "
      f"**P** prompt and **T** response tokens.",
      f"- **sampling s**: `pg.policy.sampler.sample` alone (prefill and T decode steps with the "
      f"KV cache), jitted with the update's sizes, params, temperature and compiler options: "
      f"the median of {repeats} calls after a warm-up. **sampling share** = sampling s / "
      f"s/update; the rest of the update is scoring, advantages, the trainer's forward and "
      f"backward pass and the optimizer. Two programs timed apart, not a trace of one.",
      "- **tokens/s**: response tokens generated per update over s/update.",
      "- **model GFLOP/s**: `pg.train.flops.update_flops` (matmuls of sampling, the trainer's "
      "forward and 2× for its backward) over s/update; **% of f32 peak** against the float32 "
      "matmul peak above, for the bfloat16 rows too.",
      "- **load s**: building the programs, which reads and dequantises the checkpoint; "
      "**compile s**: XLA's compile of the update's program; **sampler compile s**: of the "
      "sampler alone.",
      "- **temp MiB**: XLA's temporary buffers of the update's program (`memory_analysis`); "
      "its arguments, the parameters and AdamW state, are not in it.",
      "- **peak RSS MiB**: the process's peak resident memory during the row (Linux VmHWM, "
      "reset as the row starts, after the last row's memory was released: it counts what the "
      "process still held then, listed above, not an earlier row's peak). It includes XLA's "
      "compiler and the checkpoint's host copy.", ""]
  return "\n".join(lines)
