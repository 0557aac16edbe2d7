"""The run's metrics file: one JSON row per run and update, kept in step with the checkpoints."""

from __future__ import annotations

import json
import math
import os

import numpy as np


def atomic_write(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file and a rename: an interrupted or failed
  write leaves the old file (or none), never half of the new one."""
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _number(x: float):
  """A finite float, or None (JSON null) for NaN and ±inf: the file stays standard JSON."""
  return x if math.isfinite(x) else None


class MetricsLog:
  """JSONL rows {"run", its labels ("seed", swept values...), "update", metric...}; on resume,
  rows past the checkpoint are dropped, so no update is ever logged twice. A non-finite value
  (a skipped update's score) is written as null and read back as NaN."""

  def __init__(self, path, keep_updates_below: int):
    self.path = path
    rows = []
    if os.path.exists(path):
      with open(path) as f:
        for line in f:
          try:
            row = json.loads(line)
          except json.JSONDecodeError:  # a line cut short by a killed process
            continue
          if row["update"] < keep_updates_below:
            rows.append(line if line.endswith("\n") else line + "\n")
    atomic_write(path, "".join(rows))

  def append(self, metrics, first_update: int, labels=None):
    """metrics: dict of arrays `[num_runs, K]`; labels: one dict per run (default: seed = run)."""
    names = sorted(metrics)
    arrays = {k: np.asarray(metrics[k]) for k in names}
    R, K = arrays[names[0]].shape
    labels = labels or [{"seed": r} for r in range(R)]
    lines = []
    for r in range(R):
      for k in range(K):
        row = {"run": r, **labels[r], "update": first_update + k}
        row.update({n: _number(float(arrays[n][r, k])) for n in names})
        lines.append(json.dumps(row) + "\n")
    with open(self.path, "a") as f:
      f.write("".join(lines))

  def read(self, labels=()):
    return read(self.path, labels)


def read(path, labels=()) -> dict:
  """Every metric of a metrics.jsonl as an array `[num_runs, num_updates]`, NaN where a value
  is null or missing (`labels`: swept names to leave out)."""
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  if not rows:
    return {}
  index = "run" if "run" in rows[0] else "seed"
  R = 1 + max(r[index] for r in rows)
  U = 1 + max(r["update"] for r in rows)
  skip = {"run", "seed", "update", *labels}
  out = {k: np.full((R, U), np.nan) for k in rows[0] if k not in skip}
  for r in rows:
    for k in out:
      value = r.get(k)
      out[k][r[index], r["update"]] = np.nan if value is None else value
  return out
