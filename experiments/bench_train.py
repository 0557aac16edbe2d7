"""Throughput of the whole compiled update (sample → score → advantages → loss → update).

    python experiments/bench_train.py [--config configs/default.py] [--seeds 1 8 32]

About 1 minute on a 2-core CPU with the default config. For each number of vmapped seeds it
prints: seconds per update, generated tokens per second (response tokens actually produced,
over all seeds), compile time, XLA's temporary memory for the chunk program, and the process's
peak resident memory so far.
"""

import argparse
import importlib.util
import os
import resource
import statistics
import sys
import time

import jax
import numpy as np

from pg import train


def load_config(path):
  spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def bench(config, num_seeds, repeats):
  with config.unlocked():
    config.num_seeds = num_seeds
  init, chunk = train.make_programs(config)
  state = init(train.seed_keys(config), train.hparams_from_config(config))
  start = time.perf_counter()
  compiled = chunk.lower(state).compile()
  compile_s = time.perf_counter() - start
  temp_mib = compiled.memory_analysis().temp_size_in_bytes / 2**20
  state, metrics = compiled(state)  # warm-up
  jax.block_until_ready(metrics)
  times, tokens = [], []
  for _ in range(repeats):
    start = time.perf_counter()
    state, metrics = compiled(state)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
    per_update = np.asarray(metrics["response_length"]) * config.num_prompts * config.group_size
    tokens.append(per_update.sum())  # over seeds and the chunk's updates
  seconds = statistics.median(times)
  return {
      "seeds": num_seeds,
      "s/update": seconds / config.updates_per_chunk,
      "tokens/s": float(np.median(tokens)) / seconds,
      "compile s": compile_s,
      "temp MiB": temp_mib,
      "peak RSS MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
  }


def _fmt(x):
  if isinstance(x, float):
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"
  return str(x)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..",
                                                       "configs", "default.py"))
  parser.add_argument("--seeds", type=int, nargs="+", default=[1, 8, 32])
  parser.add_argument("--repeats", type=int, default=3, help="timed chunks per row")
  args = parser.parse_args()
  config = load_config(args.config)
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPU cores, "
        f"load average {os.getloadavg()[0]:.2f}")
  print(f"config {os.path.basename(args.config)}: task {config.task.name}, model "
        f"{config.model.num_layers}L×{config.model.d_model}, {config.num_prompts}×"
        f"{config.group_size} samples per update, {config.updates_per_chunk} updates per chunk\n")
  rows = [bench(config, s, args.repeats) for s in args.seeds]
  cols = list(rows[0])
  print("| " + " | ".join(cols) + " |")
  print("|" + "---|" * len(cols))
  for r in rows:
    print("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
  sys.stdout.flush()


if __name__ == "__main__":
  main()
