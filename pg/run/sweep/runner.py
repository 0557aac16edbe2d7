"""Running a sweep: each group's pending runs in batches that fit memory, each batch an
`experiment.run` workdir; finished runs are skipped on a rerun."""

from __future__ import annotations

import hashlib
import json
import os

from pg import train
from pg.run import experiment, progress, schema
from pg.run.metrics_log import atomic_write
from pg.run.sweep.grid import groups, make_runs, run_labels, settings, swept
from pg.run.sweep.memory import batch_sizes, compile_programs, memory_budget_bytes
from pg.run.sweep.results import summarize, write_results


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


def run(config, workdir: str, *, task=None, verbose: bool = True, log=print):
  """Runs the sweep (skipping finished runs), then writes the results; returns the summary.
  `task` (a `pg.tasks.Task`) replaces config.task in every group."""
  schema.check(config)
  continuous, structural = swept(config)
  all_groups = groups(config, task)
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
    counter = progress.UpdateCounter() if verbose else None  # the bars move per update
    programs, need = compile_programs(group, first, counter)
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
        compiled[size] = train.make_programs(group.config, group.task, group.policy,
                                             size, on_update=counter)
      batch_dir = _batch_dir(workdir, group, batch)
      experiment.run(group.config, batch_dir, task=group.task, policy=group.policy, runs=runs,
                     programs=compiled[size], counter=counter,
                     verbose=verbose, report_at_end=False,
                     desc=f"{group.name} batch {b + 1}/{len(sizes)}")
      atomic_write(os.path.join(batch_dir, "done.json"), json.dumps(
          {"num_chunks": group.config.num_chunks, "runs": batch,
           "config": experiment.comparable_config(group.config)}))
  rows = collect(config, workdir, all_groups)
  summary = summarize(rows, tuple(continuous), tuple(structural))
  write_results(workdir, rows, summary, tuple(continuous), tuple(structural), log=log,
                score_range=all_groups[0].task.score_range,
                title=os.path.basename(os.path.normpath(workdir)))
  return summary


def collect(config, workdir, all_groups=None) -> list[dict]:
  """Every finished run's metric rows for the current grid, with its group's choices
  (`all_groups`: the grid's groups, built here when not given)."""
  labels = {_key(label) for label in run_labels(config)}
  continuous, _ = swept(config)
  rows = []
  for group in all_groups or groups(config):
    root = os.path.dirname(_batch_dir(workdir, group, []))
    if not os.path.isdir(root):
      continue
    group_hp = group.config.hparams.to_dict()
    for name in sorted(os.listdir(root)):
      if not os.path.exists(os.path.join(root, name, "done.json")):
        continue
      with open(os.path.join(root, name, "metrics.jsonl")) as f:
        for line in f:
          row = {k: float("nan") if v is None else v for k, v in json.loads(line).items()}
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


