"""Throughput of the whole compiled update (sample → score → advantages → loss → update).

    python experiments/bench_train.py [--config configs/default.py] [--seeds 1 8 32]
    python experiments/bench_train.py --sweep     # 4 learning rates × 8 seeds: one program
                                                  # against the same 32 runs one by one

About 1 minute on a 2-core CPU with the default config (--sweep: about 2 minutes). For each
number of vmapped seeds it prints: seconds per update, generated tokens per second (response
tokens actually produced, over all seeds), model FLOP/s (`pg.flops`) and its share of a float32
matmul peak measured in the same run, compile time, XLA's temporary memory for the chunk
program, and the process's peak resident memory so far. `--sweep` prints, for the grid in one
compiled program and for its runs done one after another, compile time, seconds per update of
the whole grid and run-updates per second.
"""

import argparse
import os
import resource
import statistics
import sys
import time

import jax
import numpy as np

from pg import flops, sweep, train
from pg.configs import load_config_file as load_config
from pg.timing import best_time
from pg.tasks import make_task


def matmul_peak(n, repeats=10):
  """Best float32 matmul FLOP/s of this device, measured now (the MFU denominator), at JAX's
  default matmul precision: the one the model's own matmuls run at (TF32 on recent GPUs)."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jax.numpy.float32)
  return 2 * n ** 3 / best_time(jax.jit(lambda a: a @ a), a, repeats=repeats)


def bench(config, num_seeds, repeats, peak):
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
  task = make_task(config.task.name, **config.task.options)
  model_flops = flops.update_flops(config, task) * num_seeds * config.updates_per_chunk
  return {
      "seeds": num_seeds,
      "s/update": seconds / config.updates_per_chunk,
      "tokens/s": float(np.median(tokens)) / seconds,
      "model GFLOP/s": model_flops / seconds / 1e9,
      "% of peak": 100 * model_flops / seconds / peak,
      "compile s": compile_s,
      "temp MiB": temp_mib,
      "peak RSS MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
  }


def timed_chunks(chunk, state, repeats):
  state, metrics = chunk(state)  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, metrics = chunk(state)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def bench_sweep(config, learning_rates, num_seeds, repeats):
  """The grid learning_rates × seeds as one program, then its runs one after another (one
  program of one run, compiled once and reused; a separate process per run would also pay
  the compile every time, which the last row adds)."""
  with config.unlocked():
    config.num_seeds = num_seeds
    config.sweep.learning_rate = tuple(learning_rates)
  labels = sweep.run_labels(config)
  R, K = len(labels), config.updates_per_chunk
  runs = sweep.make_runs(config, labels)
  start = time.perf_counter()
  (init, chunk), _ = sweep.compile_programs(config, runs)
  grid_compile = time.perf_counter() - start
  grid_s = timed_chunks(chunk, init(runs.keys, runs.hp), repeats)

  one = sweep.make_runs(config, labels[:1])
  start = time.perf_counter()
  (init1, chunk1), _ = sweep.compile_programs(config, one)
  one_compile = time.perf_counter() - start
  serial_s = 0.0
  for label in labels:
    r = sweep.make_runs(config, [label])
    serial_s += timed_chunks(chunk1, init1(r.keys, r.hp), max(1, repeats // 2))
  rows = [
      (f"one program ({len(learning_rates)} rates × {num_seeds} seeds)", 1, grid_compile,
       grid_s),
      ("one after another, program reused", 1, one_compile, serial_s),
      ("one after another, compiled for each run (estimate)", R, R * one_compile,
       serial_s + R * one_compile),
  ]
  print(f"\n## {R} runs ({len(learning_rates)} learning rates × {num_seeds} seeds), "
        f"{K} updates each\n")
  print("| mode | compiles | compile s | s per update of all runs | seed-updates/s |")
  print("|---|---|---|---|---|")
  out = []
  for name, compiles, compile_s, seconds in rows:
    out.append({"mode": name, "compiles": compiles, "compile s": compile_s,
                "s/update": seconds / K, "seed-updates/s": R * K / seconds})
    print(f"| {name} | {compiles} | {compile_s:.1f} | {seconds / K:.3f} | "
          f"{R * K / seconds:.1f} |")
  print(f"\nseed-updates/s: updates of one seed (one run of the grid) per second; the compile "
        f"counts only in the last row. One program is {serial_s / grid_s:.2f}× as fast as the "
        f"reused one-run program.")
  return out


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
  parser.add_argument("--sweep", action="store_true",
                      help="time a learning-rate × seeds grid in one program vs one by one")
  parser.add_argument("--learning-rates", type=float, nargs="+",
                      default=[3e-4, 1e-3, 3e-3, 1e-2])
  parser.add_argument("--sweep-seeds", type=int, default=8)
  parser.add_argument("--grad-accum-steps", type=int, default=None,
                      help="override the config's micro-batches per minibatch (memory for "
                           "many seeds on one device)")
  parser.add_argument("--peak-size", type=int, default=None,
                      help="side of the square matmul that measures the peak (default: 2048 "
                           "on CPU, 8192 on an accelerator)")
  args = parser.parse_args()
  config = load_config(args.config)
  if args.grad_accum_steps is not None:
    with config.unlocked():
      config.grad_accum_steps = args.grad_accum_steps
  device = jax.devices()[0]
  print(f"jax {jax.__version__}, backend {jax.default_backend()} ({device.device_kind}), "
        f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f}")
  print(f"config {os.path.basename(args.config)}: task {config.task.name}, model "
        f"{config.model.num_layers}L×{config.model.d_model}, {config.num_prompts}×"
        f"{config.group_size} samples per update, {config.updates_per_chunk} updates per chunk\n")
  if args.sweep:
    bench_sweep(config, args.learning_rates, args.sweep_seeds, args.repeats)
    return
  n = args.peak_size or (2048 if jax.default_backend() == "cpu" else 8192)
  peak = matmul_peak(n)
  print(f"float32 matmul peak measured now: {peak / 1e9:,.0f} GFLOP/s ({n}² @ {n}², best of "
        f"10, default precision); grad_accum_steps {config.grad_accum_steps}\n")
  rows = [bench(config, s, args.repeats, peak) for s in args.seeds]
  cols = list(rows[0])
  print("| " + " | ".join(cols) + " |")
  print("|" + "---|" * len(cols))
  for r in rows:
    print("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
  sys.stdout.flush()


if __name__ == "__main__":
  main()
