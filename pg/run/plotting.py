"""Learning-curve figures and tables: mean across seeds with a 95% band, thin per-seed lines."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from pg.run.tables import markdown_table  # noqa: E402


def mean_and_ci(x_SxK, confidence=0.95):
  """Mean over seeds (axis 0) and the half-width of its Student-t confidence interval."""
  x_SxK = np.asarray(x_SxK, np.float64)
  n = x_SxK.shape[0]
  mean = x_SxK.mean(axis=0)
  if n < 2:
    return mean, np.zeros_like(mean)
  sem = x_SxK.std(axis=0, ddof=1) / np.sqrt(n)
  return mean, stats.t.ppf(0.5 + confidence / 2, n - 1) * sem


def summary_table(results, columns, note=""):
  """Markdown table, one row per run: for each (label, metric, (lo, hi)) column, the metric's
  mean over updates lo..hi (fractions of the run) per seed, then mean ± 95% CI across seeds."""
  rows = []
  for name, m in results.items():
    cells = []
    for _, key, (lo, hi) in columns:
      x_SxK = np.asarray(m[key])
      k = x_SxK.shape[1]
      a = min(int(lo * k), k - 1)
      window_SxW = x_SxK[:, a:max(a + 1, int(hi * k))]
      mean, ci = mean_and_ci(window_SxW.mean(axis=1, keepdims=True))
      cells.append(f"{mean[0]:.3f} ± {ci[0]:.3f}")
    rows.append([name] + cells)
  table = markdown_table(["run"] + [label for label, _, _ in columns], rows)
  return table + (f"\n\n{note}" if note else "")


def smooth(x_SxK, window: int):
  """Trailing moving average over updates (window 1: unchanged)."""
  x_SxK = np.asarray(x_SxK, np.float64)
  if window <= 1:
    return x_SxK
  c = np.cumsum(np.pad(x_SxK, ((0, 0), (1, 0))), axis=1)
  k = np.arange(1, x_SxK.shape[1] + 1)
  lo = np.maximum(k - window, 0)
  return (c[:, k] - c[:, lo]) / (k - lo)


def plot_curves(results, path, best=None, metrics=("exact_J", "grad_cosine_to_exact"),
                smoothing=None):
  """One panel per metric, one colour per run: seed mean, 95% band, thin per-seed lines.

  `smoothing` maps a metric to a trailing moving-average window (for noisy per-update metrics).
  """
  smoothing = smoothing or {}
  ncols = min(2, len(metrics))
  nrows = -(-len(metrics) // ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 4 * nrows), squeeze=False)
  for ax in axes.flat[len(metrics):]:
    ax.set_visible(False)
  for ax, key in zip(axes.flat, metrics):
    for i, (name, m) in enumerate(results.items()):
      x_SxK = smooth(m[key], smoothing.get(key, 1))
      steps = np.arange(x_SxK.shape[1])
      colour = f"C{i}"
      for seed_curve in x_SxK:
        ax.plot(steps, seed_curve, color=colour, lw=0.4, alpha=0.3)
      mean, ci = mean_and_ci(x_SxK)
      ax.plot(steps, mean, color=colour, lw=2, label=f"{name} ({x_SxK.shape[0]} seeds)")
      ax.fill_between(steps, mean - ci, mean + ci, color=colour, alpha=0.2)
    if key == "exact_J" and best is not None:
      ax.axhline(best, color="k", ls="--", lw=1, label="max J")
    ax.set_xlabel("update")
    window = smoothing.get(key, 1)
    ax.set_ylabel(key + (f" (moving average of {window})" if window > 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
