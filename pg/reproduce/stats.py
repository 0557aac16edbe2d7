"""The numbers a results file states: window means per seed, 95% t-intervals, Welch tests.

A `Summary` is a JSON-able dict {"mean", "ci95", "per_seed"}: the mean across seeds of a
per-seed value, the half-width of its 95% Student-t interval and the per-seed values.
"""

from __future__ import annotations

import numpy as np

from pg.run import plotting

WINDOWS = {"first10": (0.0, 0.1), "last10": (0.9, 1.0)}  # fractions of the updates
ALPHA = 0.05  # a difference counts when Welch's two-sided test gives p below this


def window_means(x_SxU, lo: float, hi: float) -> np.ndarray:
  """Per seed, the mean of updates [lo·U, hi·U) (at least one update), as
  `pg.run.plotting.summary_table` takes it."""
  x_SxU = np.asarray(x_SxU, np.float64)
  U = x_SxU.shape[1]
  a = min(int(lo * U), U - 1)
  return np.nanmean(x_SxU[:, a:max(a + 1, int(hi * U))], axis=1)


def summary(per_seed) -> dict:
  """{"mean", "ci95", "per_seed"} of per-seed values (ci95 is 0 for one seed)."""
  x_S = np.asarray(per_seed, np.float64)
  mean, half = plotting.mean_and_ci(x_S[:, None])
  return {"mean": float(mean[0]), "ci95": float(half[0]),
          "per_seed": [round(float(v), 6) for v in x_S]}


def windows(x_SxU) -> dict:
  """{"first10": summary, "last10": summary} of one metric's curves."""
  return {name: summary(window_means(x_SxU, lo, hi)) for name, (lo, hi) in WINDOWS.items()}


def pm(s: dict, digits: int = 2) -> str:
  """'mean ± ci95' of a summary."""
  return f"{s['mean']:.{digits}f} ± {s['ci95']:.{digits}f}"


def welch(a: dict, b: dict) -> float:
  """Two-sided p-value of Welch's t-test between two summaries' per-seed values (1.0 when
  either has fewer than two seeds or both are constant)."""
  x, y = np.asarray(a["per_seed"]), np.asarray(b["per_seed"])
  if len(x) < 2 or len(y) < 2 or (np.ptp(x) == 0 and np.ptp(y) == 0):
    return 1.0 if np.mean(x) == np.mean(y) or len(x) < 2 or len(y) < 2 else 0.0
  return plotting.welch(y, x)[2]


def compare(a: dict, b: dict) -> tuple[str, float]:
  """("higher" | "lower" | "not significantly different", p) for a against b."""
  p = welch(a, b)
  if p >= ALPHA:
    return "not significantly different", p
  return ("higher" if a["mean"] > b["mean"] else "lower"), p


def p_text(p: float) -> str:
  return f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4"


def wall(seconds: float) -> str:
  """'97 s' or '4 min 59 s'."""
  s = int(round(seconds))
  return f"{s} s" if s < 120 else f"{s // 60} min {s % 60} s"
