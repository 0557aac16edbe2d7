"""TensorBoard scalars: one event directory per run, and one per setting for its seed mean.

    writer = tensorboard.open_writer(os.path.join(workdir, "tb"), labels, first_update)
    tensorboard.write_chunk(writer, metrics, first_update)  # metrics: {name: [num_runs, K]}
    tensorboard.close(writer)

`labels` holds one dict per run, as `pg.train.Runs.labels` (`{"seed": 2}`, or in a sweep
`{"learning_rate": 0.001, "seed": 2}`). Under `logdir`, run r writes to `<setting>/seed_<j>`
and each setting's mean over its seeds to `<setting>/mean`, where <setting> names the run's
other labels sorted by name (`learning_rate=0.001`; for runs of seeds only, nothing:
`seed_0`, ..., `mean`). Each scalar is tagged by its metric's name alone, so TensorBoard draws
every run and every mean of one metric in one chart, each run named by its setting and seed:

    tensorboard --logdir runs/default/tb     # a sweep: --logdir runs/<sweep> (every batch)

A non-finite value is never written: a run's NaN (an update skipped under
`config.on_nonfinite = "skip"`) leaves a gap, and a mean averages the seeds whose value is
finite at that update (none: a gap). On a resume (`first_update` > 0), events at or after it
from the interrupted run are hidden (TensorBoard's purge step), as `MetricsLog` drops rows past
the checkpoint. Without tensorboardX, `open_writer` returns None and the rest do nothing.
"""

from __future__ import annotations

import json
import os
import time
from typing import NamedTuple

import numpy as np


class Writer(NamedTuple):
  runs: list   # one SummaryWriter per run, in the order of its labels
  means: list  # (SummaryWriter, run indices) per setting


def _value(v) -> str:
  return repr(v) if isinstance(v, float) else str(v)


def _safe(name: str) -> str:
  return "".join(c if c.isalnum() or c in "=.,_+-" else "_" for c in name)


def setting_name(label: dict) -> str:
  """A run's setting as a directory name: its labels other than the seed, sorted by name."""
  return _safe(",".join(f"{k}={_value(v)}" for k, v in sorted(label.items()) if k != "seed"))


def run_dirs(labels) -> tuple[list, dict]:
  """(per run its directory, {setting directory: its runs' indices}), relative to the logdir.
  Settings whose names collide once made safe for a path get a suffix."""
  settings: dict = {}  # label less the seed, as JSON -> directory
  runs, members = [], {}
  for r, label in enumerate(labels):
    key = json.dumps({k: v for k, v in label.items() if k != "seed"}, sort_keys=True)
    if key not in settings:
      base, i = setting_name(label), 1
      name = base
      while name in settings.values():
        i += 1
        name = f"{base}_{i}"
      settings[key] = name
    setting = settings[key]
    leaf = f"seed_{label['seed']}" if "seed" in label else f"run_{r}"
    path = os.path.join(setting, leaf)
    if path in runs:  # two runs of one setting and seed: keep both
      path = os.path.join(setting, f"{leaf}_run_{r}")
    runs.append(path)
    members.setdefault(os.path.join(setting, "mean"), []).append(r)
  return runs, members


def open_writer(logdir, labels, first_update: int = 0) -> Writer | None:
  """Event writers for `labels`' runs and their settings' means under `logdir` (None without
  tensorboardX). `first_update` > 0: hide the events a previous run wrote from it on."""
  try:
    from tensorboardX import SummaryWriter
  except ImportError:  # optional: metrics.jsonl and the figures carry the same numbers
    return None
  purge = first_update if first_update > 0 else None
  # A new file per opening, named in time order to the nanosecond (TensorBoard reads a
  # directory's files in name order; tensorboardX's own names stop at the second).
  suffix = f".{time.time_ns()}"
  open_ = lambda path: SummaryWriter(os.path.join(logdir, path), purge_step=purge,
                                     filename_suffix=suffix)
  runs, members = run_dirs(labels)
  return Writer([open_(path) for path in runs],
                [(open_(path), np.array(idx)) for path, idx in members.items()])


def _add(writer, tag, x_K, first_update):
  for k in np.flatnonzero(np.isfinite(x_K)):
    writer.add_scalar(tag, float(x_K[k]), first_update + int(k))


def write_chunk(writer: Writer | None, metrics, first_update: int) -> None:
  """Writes one chunk: `metrics` {name: [num_runs, K]} for updates first_update + k. Every
  finite value of every run, and per setting the mean of its seeds' finite values."""
  if writer is None:
    return
  for name in sorted(metrics):
    x_RxK = np.asarray(metrics[name], np.float64)
    if x_RxK.ndim != 2 or x_RxK.shape[0] != len(writer.runs):
      raise ValueError(f"metric {name!r}: expected shape [{len(writer.runs)} runs, K updates], "
                       f"got {x_RxK.shape}.")
    for run, x_K in zip(writer.runs, x_RxK):
      _add(run, name, x_K, first_update)
    for mean, idx in writer.means:
      x_SxK = x_RxK[idx]
      finite_SxK = np.isfinite(x_SxK)
      n_K = finite_SxK.sum(axis=0)
      total_K = np.where(finite_SxK, x_SxK, 0.0).sum(axis=0)
      _add(mean, name, np.where(n_K > 0, total_K / np.maximum(n_K, 1), np.nan), first_update)
  for w in writer.runs + [w for w, _ in writer.means]:
    w.flush()


def write_points(writer: Writer | None, rows, update: int, prefix: str = "heldout_",
                 tag: str = "heldout/") -> None:
  """Writes one evaluation: `rows` (one dict per run, in the writer's run order) at step
  `update`, each `prefix`-named score as `tag` + its name, "@" written "_at_" (TensorBoard
  tags take no "@"; interval half-widths left out); per setting the mean of its seeds'."""
  if writer is None:
    return
  names = sorted(k for k in rows[0] if k.startswith(prefix) and not k.endswith("_ci95"))
  metrics = {tag + k[len(prefix):].replace("@", "_at_"): np.array([[np.nan if r.get(k) is None else r[k]]
                                              for r in rows], np.float64) for k in names}
  write_chunk(writer, metrics, update)


def close(writer: Writer | None) -> None:
  """Flushes and closes every event file."""
  if writer is None:
    return
  for w in writer.runs + [w for w, _ in writer.means]:
    w.close()
