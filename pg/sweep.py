"""Sweeps: every setting × every seed, continuous values in one compiled program.

A config's `sweep` block names the values to try; everything else is the base config.

    config.sweep.learning_rate = (1e-4, 3e-4, 1e-3)   # a hyperparameter (pg.hparams.SPEC)
    config.sweep.advantage = ("rloo", "grpo")         # a choice that changes the program
    config.sweep.model.d_model = (64, 128)

Hyperparameters are traced leaves of the train state (`pg.hparams`), so their grid and the seeds
form one vmapped run axis: settings × seeds runs in *one* compile. Choices that change the
program (`STRUCTURAL`: names, sizes, counts) form groups, compiled one after another. A run is
one seed of one setting; run (setting, seed j) uses the same PRNG key as seed j of
`experiments/train.py` with that setting, so both give the same numbers.

Memory: a group's runs go into one program if XLA's memory analysis of it fits
`sweep.memory_budget_mib` (0: 80% of what the device has free); otherwise they are split into
equal batches that do, and the split is reported. `sweep.runs_per_batch` caps a batch by hand.

Workdir: `groups/<group>/batch_<hash>/` holds each batch (an `experiment.run` workdir: config,
metrics, checkpoints; interrupted batches resume), and at the top `results.jsonl` (every run's
metrics with its settings), `results.md` / `results.csv` (final, best and area under the curve
per setting, 95% intervals across seeds) and figures. A rerun skips the runs already finished.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import itertools
import json
import os
from typing import NamedTuple

import jax
import numpy as np

from pg import hparams as hparams_lib
from pg import experiment, plotting, train
from pg.configs import STRUCTURAL

CONTINUOUS = tuple(hparams_lib.SPEC)
MEMORY_FRACTION = 0.8  # of the free device memory, when sweep.memory_budget_mib is 0


def _get(config, path):
  for part in path.split("."):
    config = config[part]
  return config


def _set(config, path, value):
  *parents, leaf = path.split(".")
  for part in parents:
    config = config[part]
  config[leaf] = value


def swept(config):
  """(continuous, structural): name -> tuple of values, for every sweep entry that is set.

  Raises, naming the field, on an empty or repeated tuple, an out-of-range hyperparameter or a
  structural value the train step would refuse; all before anything compiles."""
  continuous, structural = {}, {}
  block = config.get("sweep")
  if block is None:
    return continuous, structural
  _refuse_unknown_names(block)
  for path in CONTINUOUS + STRUCTURAL:
    try:
      values = _get(block, path)
    except KeyError:
      continue
    if values is None:
      continue
    if not isinstance(values, (tuple, list)) or not values:
      raise ValueError(f"config.sweep.{path} must be a non-empty tuple of values, got "
                       f"{values!r}.")
    values = tuple(values)
    if len(set(values)) != len(values):
      raise ValueError(f"config.sweep.{path} repeats a value: {values}.")
    (continuous if path in CONTINUOUS else structural)[path] = values
  for name, values in continuous.items():
    for v in values:
      if isinstance(v, (bool, str)) or not isinstance(v, (int, float)):
        raise ValueError(f"config.sweep.{name} must hold numbers, got {v!r}.")
      try:
        hparams_lib._check_value(name, v)
      except ValueError as e:
        raise ValueError(f"config.sweep.{name}: {e}") from None
  for option, kinds, what in (("runs_per_batch", (int,), "an int"),
                              ("memory_budget_mib", (int, float), "a number")):
    value = block.get(option, 0)
    if not isinstance(value, kinds) or isinstance(value, bool) or not value >= 0:
      raise ValueError(f"config.sweep.{option} must be {what} >= 0 (0: automatic), "
                       f"got {value!r}.")
  return continuous, structural


def _refuse_unknown_names(block):
  """A misspelt sweep entry would otherwise be ignored: the grid would silently lack it."""
  options = ("runs_per_batch", "memory_budget_mib")
  known = CONTINUOUS + STRUCTURAL + options
  names = [k for k in block if k != "model"] + [f"model.{k}" for k in block.get("model") or {}]
  unknown = [n for n in names if n not in known]
  if unknown:
    raise KeyError(f"config.sweep: unknown name(s) {unknown}; known: {', '.join(known)}.")


class Group(NamedTuple):
  """One compiled program's worth of runs: a structural choice and its config."""
  name: str         # "advantage=rloo,model.d_model=64", or "base"
  choices: dict     # structural path -> value
  config: object    # the base config with the choices applied (validated)


def groups(config) -> list[Group]:
  """Every combination of the structural values, each validated by the train step's checks."""
  _, structural = swept(config)
  out = []
  for combo in itertools.product(*structural.values()):
    choices = dict(zip(structural, combo))
    group_config = copy.deepcopy(config)
    with group_config.unlocked():
      for path, value in choices.items():
        _set(group_config, path, value)
    try:
      train.validate(group_config)
    except (ValueError, KeyError, TypeError) as e:
      hint = ""
      if any(isinstance(v, str) and v.startswith("(") for v in choices.values()):
        hint = (" (on the command line, quote names inside the tuple: "
                "--config.sweep.advantage='(\"rloo\", \"grpo\")')")
      message = e.args[0] if e.args else e  # (a KeyError's str() adds quotes)
      raise type(e)(f"config.sweep: the setting {choices} is refused: {message}{hint}") from None
    name = ",".join(f"{k}={v}" for k, v in choices.items()) or "base"
    out.append(Group(name, choices, group_config))
  return out


def settings(config) -> list[dict]:
  """Every combination of the continuous values: name -> value (empty dict: no grid)."""
  continuous, _ = swept(config)
  return [dict(zip(continuous, combo)) for combo in itertools.product(*continuous.values())]


def run_labels(config) -> list[dict]:
  """One label per run of a group, setting-major: {"seed": j, swept name: value, ...}."""
  return [{"seed": j, **s} for s in settings(config) for j in range(config.num_seeds)]


def make_runs(config, labels) -> train.Runs:
  """Keys and per-run hyperparameter arrays for `labels` (seed j gets seed_keys(config)[j])."""
  keys = train.seed_keys(config)
  names = sorted({k for label in labels for k in label} - {"seed"})
  base = config.hparams.to_dict()
  hp = {name: np.asarray([label.get(name, base[name]) for label in labels], np.float32)
        for name in names}
  hp = hparams_lib.make_hparams(**{**base, **hp})
  return train.Runs(keys[np.asarray([label["seed"] for label in labels])], hp, list(labels))


def batch_sizes(num_runs: int, max_per_batch: int) -> list[int]:
  """Sizes of equal batches (the last may be smaller) covering num_runs, none above the cap."""
  if num_runs <= 0:
    return []
  n = -(-num_runs // max(1, max_per_batch))
  size = -(-num_runs // n)
  return [size] * (num_runs // size) + ([num_runs % size] if num_runs % size else [])


def memory_budget_bytes(config) -> int:
  """Bytes one program may use per device: sweep.memory_budget_mib, or 80% of the free memory
  (the accelerator's own, or the host's MemAvailable on CPU, shared by its devices)."""
  mib = config.sweep.get("memory_budget_mib", 0)
  if mib:
    return int(mib * 2**20)
  device = jax.devices()[0]
  stats = device.memory_stats() if device.platform != "cpu" else None
  if stats and "bytes_limit" in stats:
    free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
  else:
    free = _host_available_bytes() // max(1, jax.local_device_count())
  return int(MEMORY_FRACTION * free)


def _host_available_bytes() -> int:
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def program_bytes(compiled) -> int:
  """Peak bytes XLA plans for one compiled program: arguments, outputs not aliased to donated
  arguments, and temporaries."""
  m = compiled.memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
             + m.temp_size_in_bytes)


def compile_programs(config, runs: train.Runs):
  """`(init, compiled train_chunk)` for these runs, and the program's bytes."""
  init, chunk = train.make_programs(config, len(runs.labels))
  abstract = jax.eval_shape(init, runs.keys, runs.hp)
  compiled = chunk.lower(abstract).compile()
  return (init, compiled), program_bytes(compiled)


def _batch_dir(workdir, group, labels):
  digest = hashlib.sha1(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:10]
  slug = "".join(c if c.isalnum() or c in "=.,_-" else "_" for c in group.name)
  return os.path.join(workdir, "groups", slug, f"batch_{digest}")


def finished_labels(workdir, group) -> list[dict]:
  """Labels of the runs of `group` whose batch finished config.num_chunks chunks. A finished
  batch run with another config (a hyperparameter outside the grid, the task, the model...) is
  refused rather than reused: its results would be silently stale."""
  root = os.path.dirname(_batch_dir(workdir, group, []))
  done = []
  if not os.path.isdir(root):
    return done
  current = experiment.comparable_config(group.config)
  for name in sorted(os.listdir(root)):
    path = os.path.join(root, name, "done.json")
    if os.path.exists(path):
      with open(path) as f:
        marker = json.load(f)
      saved = marker.get("config") or {}
      if saved != current:
        fields = experiment.differing_fields(saved, current)
        raise ValueError(f"sweep workdir {workdir!r} holds finished runs of group "
                         f"{group.name!r} made with a different config (fields {fields}); "
                         f"use another workdir or delete it.")
      if marker["num_chunks"] >= group.config.num_chunks:
        done.extend(marker["runs"])
  return done


def _key(label):
  return json.dumps(label, sort_keys=True)


def run(config, workdir: str, *, verbose: bool = True, log=print):
  """Runs the sweep (skipping finished runs), then writes the results; returns the summary."""
  continuous, structural = swept(config)
  all_groups = groups(config)
  labels = run_labels(config)
  num_settings = len(settings(config)) * len(all_groups)
  log(f"sweep: {num_settings} settings × {config.num_seeds} seeds = "
      f"{num_settings * config.num_seeds} runs in {len(all_groups)} group(s) of "
      f"{len(labels)} runs (one compile per group and batch size)")
  os.makedirs(workdir, exist_ok=True)
  for g_index, group in enumerate(all_groups):
    done = {_key(label) for label in finished_labels(workdir, group)}
    pending = [label for label in labels if _key(label) not in done]
    head = f"[{g_index + 1}/{len(all_groups)}] {group.name}"
    if not pending:
      log(f"{head}: all {len(labels)} runs finished before, skipped")
      continue
    if done:
      log(f"{head}: {len(labels) - len(pending)} runs finished before, skipped; "
          f"{len(pending)} to go")
    cap = config.sweep.get("runs_per_batch", 0) or len(pending)
    first = make_runs(group.config, pending[:min(cap, len(pending))])
    programs, need = compile_programs(group.config, first)
    budget = memory_budget_bytes(config)
    per_run = need / len(first.labels)
    if need > budget:
      cap = max(1, int(budget // per_run))
      sizes = batch_sizes(len(pending), cap)
      log(f"{head}: {len(first.labels)} runs need {need / 2**20:,.0f} MiB, over the "
          f"{budget / 2**20:,.0f} MiB budget: split into {len(sizes)} batches of "
          f"{'/'.join(str(s) for s in sorted(set(sizes), reverse=True))} runs "
          f"(~{per_run / 2**20:,.1f} MiB per run)")
    else:
      sizes = batch_sizes(len(pending), cap)
      split = f" in {len(sizes)} batches (runs_per_batch = {cap})" if len(sizes) > 1 else ""
      log(f"{head}: {len(pending)} runs{split}, {need / 2**20:,.0f} MiB per program of "
          f"{budget / 2**20:,.0f} MiB budget")
    compiled = {len(first.labels): programs} if need <= budget else {}
    start = 0
    for b, size in enumerate(sizes):
      batch = pending[start:start + size]
      start += size
      runs = make_runs(group.config, batch)
      if size not in compiled:
        compiled[size] = train.make_programs(group.config, size)
      batch_dir = _batch_dir(workdir, group, batch)
      experiment.run(group.config, batch_dir, runs=runs, programs=compiled[size],
                     verbose=verbose, report_at_end=False,
                     desc=f"{group.name} batch {b + 1}/{len(sizes)}")
      with open(os.path.join(batch_dir, "done.json"), "w") as f:
        json.dump({"num_chunks": group.config.num_chunks, "runs": batch,
                   "config": experiment.comparable_config(group.config)}, f)
  rows = collect(config, workdir)
  summary = summarize(rows, tuple(continuous), tuple(structural))
  write_results(workdir, rows, summary, tuple(continuous), tuple(structural), log=log)
  return summary


def collect(config, workdir) -> list[dict]:
  """Every finished run's metric rows for the current grid, with its group's choices."""
  labels = {_key(label) for label in run_labels(config)}
  continuous, _ = swept(config)
  rows = []
  for group in groups(config):
    root = os.path.dirname(_batch_dir(workdir, group, []))
    if not os.path.isdir(root):
      continue
    group_hp = group.config.hparams.to_dict()
    for name in sorted(os.listdir(root)):
      if not os.path.exists(os.path.join(root, name, "done.json")):
        continue
      with open(os.path.join(root, name, "metrics.jsonl")) as f:
        for line in f:
          row = json.loads(line)
          row.pop("run")
          if row["update"] >= group.config.updates_per_chunk * group.config.num_chunks:
            continue
          label = {k: row[k] for k in row if k == "seed" or k in continuous}
          if _key(label) in labels:
            clash = set(group.choices) & set(row)
            assert not clash, f"metric names {clash} clash with swept config fields"
            hp = {**group_hp, **{k: row[k] for k in continuous}}
            rows.append({"group": group.name, **group.choices, **row, "hparams": hp})
  return rows


class Setting(NamedTuple):
  values: dict            # structural and continuous values of this setting
  curves_SxU: np.ndarray  # mean_score per seed and update
  final: tuple            # (mean, 95% half-width): mean score over the last 10% of updates
  best: tuple             # (mean, half-width) at the update where the seed mean peaks
  best_update: int
  auc: tuple              # (mean, half-width): mean score over all updates


def summarize(rows, continuous, structural, metric="mean_score") -> list[Setting]:
  """Per setting: final, best and area-under-curve of `metric`, with 95% Student-t intervals
  across seeds."""
  names = tuple(structural) + tuple(continuous)
  by_setting: dict = {}
  for row in rows:
    key = tuple(row[n] for n in names)
    by_setting.setdefault(key, []).append(row)
  out = []
  for key, group_rows in by_setting.items():
    seeds = sorted({r["seed"] for r in group_rows})
    U = 1 + max(r["update"] for r in group_rows)
    x = np.full((len(seeds), U), np.nan)
    for r in group_rows:
      x[seeds.index(r["seed"]), r["update"]] = r[metric]
    tail = x[:, -max(1, U // 10):].mean(axis=1, keepdims=True)
    window = max(1, U // 20)
    u_best = int(np.argmax(plotting.smooth(x, window).mean(axis=0)))
    best_SxW = x[:, max(0, u_best - window + 1):u_best + 1].mean(axis=1, keepdims=True)
    auc = x.mean(axis=1, keepdims=True)
    stat = lambda a: tuple(float(v[0]) for v in plotting.mean_and_ci(a))
    out.append(Setting(dict(zip(names, key)), x, stat(tail), stat(best_SxW), u_best,
                       stat(auc)))
  return out


def _fmt(v):
  return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_results(workdir, rows, summary, continuous, structural, log=print):
  """results.jsonl, results.md, results.csv, curves.png and score_vs_<name>.png."""
  with open(os.path.join(workdir, "results.jsonl"), "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  names = tuple(structural) + tuple(continuous)
  header = list(names) + ["seeds", "final score", "best score (update)", "area under curve"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  order = sorted(summary, key=lambda s: -s.final[0])
  for s in order:
    seeds = s.curves_SxU.shape[0]
    pm = (lambda stat: f"{stat[0]:.3f} ± {stat[1]:.3f}") if seeds > 1 else (
        lambda stat: f"{stat[0]:.3f} (1 seed)")
    cells = [_fmt(s.values[n]) for n in names] + [
        str(seeds), pm(s.final), f"{pm(s.best)} ({s.best_update})", pm(s.auc)]
    lines.append("| " + " | ".join(cells) + " |")
  note = ("final: mean score over the last 10% of updates; best: over a window of 5% of the "
          "updates ending where the seed mean peaks; area: mean score over all updates. "
          "± is a 95% Student-t interval across seeds.")
  table = "\n".join(lines) + "\n\n" + note + "\n"
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(table)
  with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(list(names) + ["seeds", "final", "final_ci95", "best", "best_ci95",
                              "best_update", "auc", "auc_ci95"])
    for s in order:
      seeds = s.curves_SxU.shape[0]
      ci = lambda stat: (stat[0], stat[1] if seeds > 1 else "")  # no interval from one seed
      w.writerow([s.values[n] for n in names] + [seeds, *ci(s.final), *ci(s.best),
                                                  s.best_update, *ci(s.auc)])
  figures = [plot_curves(workdir, summary, names)]
  for name in names:
    if len({s.values[name] for s in summary}) > 1:
      figures.append(plot_against(workdir, summary, name, names))
  log(table)
  log("results: " + ", ".join(os.path.join(workdir, p) for p in
                              ("results.md", "results.csv", "results.jsonl")))
  log("figures: " + ", ".join(figures))


def _label(values, names):
  return ", ".join(f"{n}={_fmt(values[n])}" for n in names) or "base"


def plot_curves(workdir, summary, names):
  results = {_label(s.values, names): {"mean_score": s.curves_SxU} for s in summary}
  U = summary[0].curves_SxU.shape[1] if summary else 1
  return plotting.plot_curves(results, os.path.join(workdir, "curves.png"),
                              metrics=("mean_score",),
                              smoothing={"mean_score": max(1, U // 20)})


def plot_against(workdir, summary, name, names):
  """Final score and area under the curve against one swept value, one line per combination
  of the other swept values, with 95% bands across seeds."""
  import matplotlib.pyplot as plt
  others = tuple(n for n in names if n != name)
  lines: dict = {}
  for s in summary:
    lines.setdefault(_label(s.values, others), []).append(s)
  fig, axes = plt.subplots(1, 2, figsize=(12, 4))
  numeric = all(isinstance(s.values[name], (int, float)) and not isinstance(s.values[name], bool)
                for s in summary)
  xs = sorted({s.values[name] for s in summary}, key=lambda v: v if numeric else str(v))
  log_x = numeric and min(xs) > 0 and max(xs) / min(xs) >= 10
  position = (lambda v: v) if numeric else (lambda v: xs.index(v))  # names: evenly spaced
  for i, (label, members) in enumerate(sorted(lines.items())):
    members = sorted(members, key=lambda s: position(s.values[name]))
    x = [position(s.values[name]) for s in members]
    for ax, field in zip(axes, ("final", "auc")):
      mean = np.array([getattr(s, field)[0] for s in members])
      ci = np.array([getattr(s, field)[1] for s in members])
      ax.plot(x, mean, "o-", color=f"C{i}", label=label)
      ax.fill_between(x, mean - ci, mean + ci, color=f"C{i}", alpha=0.2)
  for ax, title in zip(axes, ("final score (last 10% of updates)", "area under the curve")):
    ax.set_xlabel(name)
    ax.set_ylabel(title)
    if log_x:
      ax.set_xscale("log")
    if not numeric:
      ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.grid(alpha=0.3)
    if len(lines) > 1 or others:
      ax.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, f"score_vs_{name}.png")
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def check_not_a_sweep(config, script="experiments/train.py"):
  """`experiments/train.py` trains one setting: a config with sweep values set goes to sweep.py."""
  continuous, structural = swept(config)
  if continuous or structural:
    raise ValueError(f"{script}: config.sweep sets {sorted({**continuous, **structural})}; "
                     f"run it with experiments/sweep.py (or clear config.sweep).")
