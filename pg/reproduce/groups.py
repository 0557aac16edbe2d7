"""What `experiments/reproduce.py` runs: one group per config or script whose numbers the README
and the config docstrings state, each with its number of seeds and the reason for it.

A runner takes (group, workdir, smoke) and returns the group's entry of results.json: the
command that makes the same runs, the seeds, the wall time (compile included, in this process)
and its numbers. `smoke` shrinks every run to two chunks of two updates and two seeds.
"""

from __future__ import annotations

import copy
import json
import os
import time
from typing import NamedTuple

import numpy as np

from pg import train
from pg.lab import demo
from pg.reproduce import stats
from pg.run import experiment, metrics_log, sweep
from pg.run.configs import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
THRESHOLD = 0.9  # `updates_to`: the first update whose score reaches it


class Group(NamedTuple):
  name: str
  kind: str          # a key of RUNNERS (here, or pg.reproduce.pipelines)
  config: str        # the config file, relative to the repository root ("" for none)
  seeds: int
  why: str           # why this many seeds
  default: bool = True  # run without --only (the benchmarks time this machine: only on demand)
  overrides: tuple = ()  # (dotted field, value) pairs set on the config file's config


GROUPS = (
    Group("default", "train", "configs/default.py", 8,
          "RLOO, the baseline that reinforce and reinforce_ma are compared with"),
    Group("reinforce", "train", "configs/reinforce.py", 8, "compared with RLOO (default)"),
    Group("reinforce_ma", "train", "configs/reinforce_ma.py", 8, "compared with RLOO (default)"),
    Group("rloo", "train", "configs/rloo.py", 8, "a score interval that a rerun keeps"),
    Group("grpo", "train", "configs/grpo.py", 8, "a score interval that a rerun keeps"),
    Group("llama", "train", "configs/llama.py", 8,
          "the Llama-family policy against GPT (default) on the same job"),
    Group("grpo_low_entropy", "train", "configs/grpo.py", 8,
          "what the GRPO example learned with its earlier entropy bonus (partial credit vs exact)",
          overrides=(("hparams.entropy_coef", 0.01), ("num_chunks", 40))),
    Group("ppo", "train", "configs/ppo.py", 8,
          "its seeds split between fast and slow learners: 4 seeds did not reproduce its mean"),
    Group("bench_reference", "train", "configs/bench_reference.py", 4,
          "no comparison: the update by which every seed scores above 0.9"),
    Group("sweep_lr", "sweep", "configs/sweep_lr.py", 8, "compares 2 estimators × 3 rates"),
    Group("rlhf", "rlhf", "configs/rlhf.py", 4,
          "the config's own seeds: 3 β compared by Welch tests across 4 seeds per β (with 2 per "
          "β the gold ranking once flipped between installs)"),
    Group("demo", "demo", "configs/enumerable_demo.py", 8, "the config's own 8 seeds"),
    Group("lab", "lab", "", 16, "the lab's default: 16 training seeds per cell of claim 5"),
    Group("bench", "bench", "configs/bench_reference.py", 1,
          "timings of this machine (1 and 8 vmapped seeds), not statistics", default=False),
)
BY_NAME = {g.name: g for g in GROUPS}


def select(only=None) -> list:
  """The groups named in `only` (names, or one comma-separated string), else the default ones."""
  if not only:
    return [g for g in GROUPS if g.default]
  names = [n.strip() for n in (only.split(",") if isinstance(only, str) else only) if n.strip()]
  unknown = [n for n in names if n not in BY_NAME]
  if unknown:
    raise ValueError(f"unknown group(s) {unknown}; groups: {', '.join(BY_NAME)}.")
  return [BY_NAME[n] for n in names]


def config_of(group: Group, smoke: bool, **fields):
  """The group's config with its seeds (two when `smoke`, which also cuts the run to two chunks
  of two updates) and `fields` set."""
  config = copy.deepcopy(load_config_file(os.path.join(ROOT, group.config)))
  with config.unlocked():
    config.num_seeds = 2 if smoke else group.seeds
    for path, value in group.overrides:
      *parents, leaf = path.split(".")
      block = config
      for part in parents:
        block = block[part]
      block[leaf] = value
    if smoke:
      config.update(updates_per_chunk=2, num_chunks=2, checkpoint_every=2)
    config.update(fields)
  return config


def command(script: str, group: Group, *flags) -> str:
  """The command line that makes the same runs (seeds overridden only where they differ)."""
  own = load_config_file(os.path.join(ROOT, group.config)).num_seeds if group.config else None
  seeds = [f"--config.num_seeds={group.seeds}"] if own is not None and own != group.seeds else []
  config = [f"--config {group.config}"] if group.config else []
  fields = [f"--config.{path}={value}" for path, value in group.overrides]
  return " ".join([f"python {script}", *config, *fields, *seeds, *flags])


def updates_to(x_SxU, threshold=THRESHOLD) -> list:
  """Per seed, the first update whose score reaches `threshold` (None: never)."""
  hits = np.asarray(x_SxU) >= threshold
  return [int(np.argmax(h)) if h.any() else None for h in hits]


def run_train(group, workdir, smoke):
  """`experiments/train.py` on the group's config: the score and the task's extra metrics."""
  start = time.time()
  config = config_of(group, smoke)
  task, policy = train.build(config)
  experiment.run(config, workdir, task=task, policy=policy, report_at_end=False,
                 desc=group.name)
  wall = time.time() - start
  curves = metrics_log.read(os.path.join(workdir, "metrics.jsonl"))
  names = ["mean_score"] + [n for n in experiment.extra_metric_names(task) if n in curves]
  return {"command": command("experiments/train.py", group), "seeds": config.num_seeds,
          "updates": int(curves["mean_score"].shape[1]), "wall_s": wall,
          "metrics": {n: stats.windows(curves[n]) for n in names},
          f"updates_to_{THRESHOLD:g}": updates_to(curves["mean_score"])}


def run_sweep(group, workdir, smoke):
  """`experiments/sweep.py` on the group's config: per setting, the score's windows."""
  start = time.time()
  config = config_of(group, smoke)
  summary = sweep.run(config, workdir)
  settings = [{"values": s.values, "metrics": {"mean_score": stats.windows(s.curves_SxU)}}
              for s in summary]
  return {"command": command("experiments/sweep.py", group), "seeds": config.num_seeds,
          "updates": config.updates_per_chunk * config.num_chunks,
          "wall_s": time.time() - start, "settings": settings}


def run_demo(group, workdir, smoke):
  """`experiments/estimator_demo.py`: per estimator, the exact J and the gradient's cosine."""
  start = time.time()
  config = load_config_file(os.path.join(ROOT, group.config))
  with config.unlocked():
    config.num_seeds = 2 if smoke else group.seeds
    config.num_updates = 4 if smoke else config.num_updates
  runs = demo.run_every_estimator(config, log=lambda name, _: print(f"  {name}", flush=True))
  estimators = {name: {k: stats.windows(m[k]) for k in ("exact_J", "grad_cosine_to_exact")}
                for name, m in runs.items()}
  return {"command": command("experiments/estimator_demo.py", group), "seeds": config.num_seeds,
          "updates": config.num_updates, "wall_s": time.time() - start,
          "max_J": demo.max_objective(config), "estimators": estimators}


def run_bench(group, workdir, smoke):
  """`experiments/bench_train.py` on the reference problem: a throughput row per seed count."""
  from pg.bench import train as bench  # layer 4: a timing, imported only when asked for
  start = time.time()
  config = load_config_file(os.path.join(ROOT, group.config))
  seeds, repeats = ((1,), 1) if smoke else ((1, 8), 3)
  peak = bench.matmul_peak(512 if smoke else 2048)
  group_ = bench.build_group(config)
  rows = []
  for s in seeds:
    print(f"  {s} seed(s)", flush=True)
    rows.append(bench.update_throughput(
        group_._replace(config=bench.changed(group_.config, num_seeds=s)), repeats=repeats,
        peak=peak))
  return {"command": f"python experiments/bench_train.py --config {group.config} --seeds "
                     + " ".join(str(s) for s in seeds), "seeds": max(seeds),
          "wall_s": time.time() - start, "peak_gflops": peak / 1e9, "rows": rows,
          "cpus": os.cpu_count()}
