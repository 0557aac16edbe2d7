"""Throughput of the whole compiled update (sample → score → advantages → loss → update).

`report_throughput`: for each number of vmapped seeds, seconds per update, generated tokens per
second (response tokens actually produced, over all seeds), model FLOP/s (`pg.train.flops`) and
its share of a float32 matmul peak measured in the same run, compile time, XLA's temporary
memory for the chunk program, and the process's peak resident memory so far.
`report_sweep`: a learning-rate × seeds grid in one compiled program against its runs one after
another: compile time, seconds per update of the whole grid and run-updates per second.
"""

from __future__ import annotations

import copy
import os
import resource
import statistics

import jax
import numpy as np

from pg import train
from pg.bench.timing import best_time, chunk_times, timed
from pg.run import sweep
from pg.run.tables import markdown_table
from pg.train import flops


def changed(config, **fields):
  """A copy of `config` with the dotted `fields` set (`changed(c, **{"model.d_model": 256})`);
  a dict value replaces the block it names."""
  config = copy.deepcopy(config)
  with config.unlocked():
    config.update_from_flattened_dict(fields)
  return config


def build_group(config) -> sweep.Group:
  """The config's task and policy, built and validated once (`pg.train.build`), as the one group
  of a sweep (`pg.run.sweep.groups`): what `sweep.compile_programs` compiles."""
  (group,) = sweep.groups(config)
  return group


def header(config, name: str) -> str:
  """The machine and the problem, the two lines a benchmark's output opens with."""
  device = jax.devices()[0]
  return (f"jax {jax.__version__}, backend {jax.default_backend()} ({device.device_kind}), "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f}\n"
          f"config {name}: task {config.task.name}, model "
          f"{config.model.num_layers}L×{config.model.d_model}, {config.num_prompts}×"
          f"{config.group_size} samples per update, {config.updates_per_chunk} updates per chunk\n")


def matmul_peak(n: int, repeats: int = 10) -> float:
  """Best float32 matmul FLOP/s of this device, measured now (the MFU denominator), at JAX's
  default matmul precision: the one the model's own matmuls run at (TF32 on recent GPUs)."""
  a_NxN = jax.random.normal(jax.random.PRNGKey(0), (n, n), jax.numpy.float32)
  return 2 * n ** 3 / best_time(jax.jit(lambda a: a @ a), a_NxN, repeats=repeats)


def update_throughput(group: sweep.Group, *, repeats: int, peak: float) -> dict:
  """One row for the group's config.num_seeds seeds: the median of `repeats` timed chunks."""
  config = group.config
  runs = train.seed_runs(config)
  ((init, chunk), _), compile_s = timed(sweep.compile_programs, group, runs)
  temp_mib = chunk.memory_analysis().temp_size_in_bytes / 2**20
  times, metrics, _ = chunk_times(chunk, init(runs.keys, runs.hp), repeats)
  seconds = statistics.median(times)
  samples = config.num_prompts * config.group_size
  tokens = [np.asarray(m["response_length"]).sum() * samples for m in metrics]  # seeds, updates
  model_flops = (flops.update_flops(config, group.task, group.policy) * config.num_seeds
                 * config.updates_per_chunk)
  return {
      "seeds": config.num_seeds,
      "s/update": seconds / config.updates_per_chunk,
      "tokens/s": float(np.median(tokens)) / seconds,
      "model GFLOP/s": model_flops / seconds / 1e9,
      "% of peak": 100 * model_flops / seconds / peak,
      "compile s": compile_s,
      "temp MiB": temp_mib,
      "peak RSS MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
  }


def _fmt(x):
  if isinstance(x, float):
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"
  return str(x)


def report_throughput(config, seeds, repeats: int, peak_size: int | None = None):
  """Prints the measured matmul peak, then one `update_throughput` row per number of seeds."""
  n = peak_size or (2048 if jax.default_backend() == "cpu" else 8192)
  peak = matmul_peak(n)
  print(f"float32 matmul peak measured now: {peak / 1e9:,.0f} GFLOP/s ({n}² @ {n}², best of "
        f"10, default precision); grad_accum_steps {config.grad_accum_steps}\n")
  group = build_group(config)
  rows = [update_throughput(group._replace(config=changed(group.config, num_seeds=s)),
                            repeats=repeats, peak=peak) for s in seeds]
  print(markdown_table(list(rows[0]), [[_fmt(v) for v in r.values()] for r in rows]), flush=True)


def sweep_comparison(config, learning_rates, num_seeds: int, repeats: int) -> list[dict]:
  """The grid learning_rates × seeds as one program, then its runs one after another (one
  program of one run, compiled once and reused; a separate process per run would also pay
  the compile every time, which the last row adds). One dict per mode."""
  group = build_group(changed(config, num_seeds=num_seeds,
                              **{"sweep.learning_rate": tuple(learning_rates)}))
  labels = sweep.run_labels(group.config)
  R, K = len(labels), group.config.updates_per_chunk

  def median_seconds(init, chunk, runs, repeats):
    return statistics.median(chunk_times(chunk, init(runs.keys, runs.hp), repeats)[0])
  grid = sweep.make_runs(group.config, labels)
  ((init, chunk), _), grid_compile = timed(sweep.compile_programs, group, grid)
  grid_s = median_seconds(init, chunk, grid, repeats)
  ((init1, chunk1), _), one_compile = timed(sweep.compile_programs, group,
                                            sweep.make_runs(group.config, labels[:1]))
  serial_s = sum(median_seconds(init1, chunk1, sweep.make_runs(group.config, [label]),
                                max(1, repeats // 2)) for label in labels)
  modes = [
      (f"one program ({len(learning_rates)} rates × {num_seeds} seeds)", 1, grid_compile,
       grid_s),
      ("one after another, program reused", 1, one_compile, serial_s),
      ("one after another, compiled for each run (estimate)", R, R * one_compile,
       serial_s + R * one_compile),
  ]
  return [{"mode": name, "compiles": compiles, "compile s": compile_s, "s/update": seconds / K,
           "seed-updates/s": R * K / seconds} for name, compiles, compile_s, seconds in modes]


def report_sweep(config, learning_rates, num_seeds: int, repeats: int) -> list[dict]:
  """Prints `sweep_comparison`'s rows as a table, with how much faster one program is."""
  rows = sweep_comparison(config, learning_rates, num_seeds, repeats)
  R = len(learning_rates) * num_seeds
  print(f"\n## {R} runs ({len(learning_rates)} learning rates × {num_seeds} seeds), "
        f"{config.updates_per_chunk} updates each\n")
  print(markdown_table(
      ["mode", "compiles", "compile s", "s per update of all runs", "seed-updates/s"],
      [[r["mode"], r["compiles"], f"{r['compile s']:.1f}", f"{r['s/update']:.3f}",
        f"{r['seed-updates/s']:.1f}"] for r in rows]))
  grid, reused, _ = rows
  print(f"\nseed-updates/s: updates of one seed (one run of the grid) per second; the compile "
        f"counts only in the last row. One program is "
        f"{grid['seed-updates/s'] / reused['seed-updates/s']:.2f}× as fast as the reused "
        f"one-run program.")
  return rows
