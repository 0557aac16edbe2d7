"""How an update's time grows with response length, model width and seeds; memory at V = 32k.

    python experiments/bench_scaling.py            # all tables, ~10 minutes on a 2-core CPU
    python experiments/bench_scaling.py --quick    # the smaller half of each table, ~2 minutes

Starts from configs/bench_reference.py (width 128, 64 prompts × 4 samples, 24 tokens) and
changes one thing per table. Each row: seconds per update for the whole compiled update, the
sampler alone (same batch, jitted) and the rest (scoring, advantages, loss, optimizer), so the
part that grows fastest is visible. A row whose update would not fit in 80% of the memory
(RAM on a CPU) runs in micro-batches (`grad_accum_steps`, doubled until it fits), and the row
says how many. The memory table compiles (without running) one update at
vocabulary 32768 and 1024-token responses, with the LM head and log-probs dense or chunked
over the vocabulary, and reads XLA's temporary-buffer size.
"""

import argparse
import os

import jax
import jax.numpy as jnp

from pg import sampler, train
from pg.configs import load_config_file
from pg.timing import best_time
from pg.tasks import make_task

ROOT = os.path.join(os.path.dirname(__file__), "..")


def reference_config():
  config = load_config_file(os.path.join(ROOT, "configs", "bench_reference.py"))
  with config.unlocked():
    config.updates_per_chunk = 1
  return config


def memory_budget():
  """Bytes one program may ask for: 80% of the accelerator's memory, or of the RAM on a CPU."""
  stats = jax.devices()[0].memory_stats() or {}
  if "bytes_limit" in stats:
    return int(0.8 * stats["bytes_limit"])
  return int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def fit_in_memory(config, budget):
  """Compile one update; while XLA's temporaries and arguments exceed `budget`, double
  config.grad_accum_steps (micro-batches, whole groups each) and compile again. Returns the
  compiled chunk program; config keeps the micro-batch count that fits."""
  batch = config.num_prompts * config.group_size
  while True:
    init, chunk = train.make_programs(config)
    state = jax.eval_shape(init, train.seed_keys(config), train.hparams_from_config(config))
    compiled = chunk.lower(state).compile()
    m = compiled.memory_analysis()
    need = m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
    more = 2 * config.grad_accum_steps
    if need <= budget or batch % (more * config.group_size):
      return init, compiled
    with config.unlocked():
      config.grad_accum_steps = more


def time_update(config, repeats):
  task = make_task(config.task.name, **config.task.options)
  mcfg = train.model_config(config, task)
  init, chunk = fit_in_memory(config, memory_budget())
  state = init(train.seed_keys(config), train.hparams_from_config(config))
  holder = {"state": state}

  def step():
    holder["state"], metrics = chunk(holder["state"])
    return metrics
  total = best_time(step, repeats=repeats)
  prompts = jnp.zeros((config.num_seeds, config.num_prompts, task.prompt_len), jnp.int32)
  sample = jax.jit(jax.vmap(lambda p, pr, k: sampler.sample(  # as the train step samples
      p, mcfg, pr, k, max_new_tokens=task.max_new_tokens, eos_id=task.eos_id,
      pad_id=task.pad_id, group_size=config.group_size)),
      compiler_options=train.compiler_options())
  keys = train.seed_keys(config)
  sampling = best_time(sample, holder["state"].params, prompts, keys, repeats=repeats)
  return total, sampling


def table(title, rows, header):
  print(f"\n## {title}\n")
  print("| " + " | ".join(header) + " |")
  print("|" + "---|" * len(header))
  for r in rows:
    print("| " + " | ".join(r) + " |", flush=True)


def scaling(name, values, apply, repeats):
  rows = []
  for v in values:
    config = reference_config()
    with config.unlocked():
      apply(config, v)
    try:
      total, sampling = time_update(config, repeats)
    except jax.errors.JaxRuntimeError as e:  # e.g. RESOURCE_EXHAUSTED: say so, go on
      rows.append([str(v), f"failed: {str(e).splitlines()[0][:80]}", "", "", "", ""])
      continue
    rows.append([str(v), f"{total:.3f}", f"{sampling:.3f}", f"{max(total - sampling, 0):.3f}",
                 f"{100 * sampling / total:.0f}%", str(config.grad_accum_steps)])
  table(f"time per update vs {name}", rows,
        [name, "update s", "sampling s", "rest s", "sampling share", "micro-batches"])


def memory_table():
  rows = []
  for chunk in (None, 4096, 1024):
    config = reference_config()
    with config.unlocked():
      config.task.options = {"vocab_size": 32768, "length": 1024}
      config.num_prompts, config.group_size = 2, 2
      config.logprob_chunk_size = chunk
    init, train_chunk = train.make_programs(config)
    state = jax.eval_shape(init, train.seed_keys(config), train.hparams_from_config(config))
    compiled = train_chunk.lower(state).compile()
    mib = compiled.memory_analysis().temp_size_in_bytes / 2**20
    rows.append([str(chunk), f"{mib:,.0f}"])
  B, T, V = 4, 1024, 32768
  table(f"temporary memory of one update, V = {V}, T = {T}, B = {B} (a float32 [B, P+T, V] is "
        f"{4 * B * (T + 8) * V / 2**20:,.0f} MiB)", rows, ["logprob_chunk_size", "temp MiB"])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--repeats", type=int, default=1)
  args = parser.parse_args()
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPU cores, "
        f"load average {os.getloadavg()[0]:.2f}")
  lengths = (24, 128, 256) if args.quick else (24, 128, 512, 1024)
  widths = (128, 256) if args.quick else (128, 256, 512, 1024)
  seeds = (1, 8) if args.quick else (1, 8, 64)

  def set_length(c, t):
    c.task.options = {"length": t}

  def set_width(c, d):
    c.model.d_model = d
    c.model.num_heads = max(4, d // 64)

  def set_seeds(c, s):
    c.num_seeds = s
  scaling("response length", lengths, set_length, args.repeats)
  scaling("model width", widths, set_width, args.repeats)
  scaling("seeds", seeds, set_seeds, args.repeats)
  memory_table()


if __name__ == "__main__":
  main()
