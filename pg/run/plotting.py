"""Learning-curve figures and tables: mean across seeds with a 95% band, thin per-seed lines.

Non-finite entries (a run under `config.on_nonfinite = "skip"` logs NaN for the updates it
skipped) are left out: every mean and interval is over the seeds whose value is finite, the
figures say over how many, and a metric with no finite value reads "—" / "no finite values".
Bands are clipped to the metric's range (`bounds`, e.g. from `metric_bounds(task)`).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from pg.run.tables import markdown_table  # noqa: E402

NO_VALUES = "—"


def finite_mean(x, axis=None):
  """Mean of the finite entries along `axis`; NaN (no warning) where there is none."""
  x = np.asarray(x, np.float64)
  finite = np.isfinite(x)
  n = finite.sum(axis=axis)
  total = np.where(finite, x, 0.0).sum(axis=axis)
  return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def mean_and_ci(x_SxK, confidence=0.95):
  """Mean over seeds (axis 0) and the half-width of its Student-t confidence interval.

  Per column, over the seeds whose value is finite: n of them give the mean, and the
  half-width t_{n−1} · s / √n (0 for one seed; both NaN for none).
  """
  x_SxK = np.asarray(x_SxK, np.float64)
  finite_SxK = np.isfinite(x_SxK)
  n_K = finite_SxK.sum(axis=0)
  mean_K = finite_mean(x_SxK, axis=0)
  sq_K = np.where(finite_SxK, (x_SxK - mean_K) ** 2, 0.0).sum(axis=0)
  sem_K = np.sqrt(sq_K / np.maximum(n_K - 1, 1) / np.maximum(n_K, 1))
  t_K = stats.t.ppf(0.5 + confidence / 2, np.maximum(n_K - 1, 1))
  half_K = np.where(n_K >= 2, t_K * sem_K, np.where(n_K == 1, 0.0, np.nan))
  return mean_K, half_K


def welch(a, b, confidence=0.95):
  """(mean(b) − mean(a), half-width of its Welch interval, two-sided p) for samples a, b."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  diff = float(b.mean() - a.mean())
  if len(a) < 2 or len(b) < 2:
    return diff, float("nan"), float("nan")
  va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
  se = np.sqrt(va + vb)
  if se == 0:
    return diff, 0.0, 0.0 if diff else 1.0
  df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
  half = float(stats.t.ppf(0.5 + confidence / 2, df) * se)
  p = float(stats.ttest_ind(b, a, equal_var=False).pvalue)
  return diff, half, p


def seeds_with_values(x_SxK) -> int:
  """How many seeds (rows) hold at least one finite value."""
  return int(np.sum(np.any(np.isfinite(np.asarray(x_SxK, np.float64)), axis=1)))


def interval_label(n: int, confidence=0.95) -> str:
  """What a band is: '95% t-interval over 4 seeds'."""
  return f"{confidence:.0%} t-interval over {n} seed{'s' if n != 1 else ''}"


def clip(x, bounds):
  """`x` clipped to `bounds` = (lo, hi), None meaning unbounded on that side."""
  lo, hi = bounds if bounds is not None else (None, None)
  return np.clip(x, -np.inf if lo is None else lo, np.inf if hi is None else hi)


def metric_bounds(task) -> dict:
  """Each logged metric's range for a `pg.tasks.Task`: the score's (task.score_range), the
  policy's entropy in nats [0, log V], the response length [0, max_new_tokens], shares of
  responses (`FRACTIONS`) [0, 1]. KL to the
  reference is left unbounded: its k1 estimate averaged over samples can be below 0."""
  return {"mean_score": tuple(task.score_range),
          "entropy": (0.0, float(np.log(task.vocab_size))),
          "response_length": (0.0, float(task.max_new_tokens)),
          **{k: (0.0, 1.0) for k in FRACTIONS}}


# Metrics that are shares of responses (a verifier's components, truncation): bands in [0, 1].
FRACTIONS = ("truncated_fraction", "correct", "format", "no_answer", "exact_accuracy",
             "partial_credit")


def format_stat(mean, half, n, total=None) -> str:
  """'0.512 ± 0.031', '0.512 (1 seed)' or '—'; '(3 of 4 seeds)' when some seeds had none."""
  if n == 0 or not np.isfinite(mean):
    return NO_VALUES
  text = f"{mean:.3f} ± {half:.3f}" if n > 1 else f"{mean:.3f} (1 seed)"
  return text + (f" ({n} of {total} seeds)" if total is not None and n < total else "")


def summary_table(results, columns, note=""):
  """Markdown table, one row per run: for each (label, metric, (lo, hi)) column, the metric's
  mean over updates lo..hi (fractions of the run) per seed (its finite values), then
  mean ± 95% CI across the seeds that have one ("—" if none)."""
  rows = []
  for name, m in results.items():
    cells = []
    for _, key, (lo, hi) in columns:
      x_SxK = np.asarray(m[key], np.float64)
      k = x_SxK.shape[1]
      a = min(int(lo * k), k - 1)
      window_S = finite_mean(x_SxK[:, a:max(a + 1, int(hi * k))], axis=1)
      mean, ci = mean_and_ci(window_S[:, None])
      n = int(np.sum(np.isfinite(window_S)))
      cells.append(format_stat(mean[0], ci[0], n, x_SxK.shape[0]))
    rows.append([name] + cells)
  table = markdown_table(["run"] + [label for label, _, _ in columns], rows)
  return table + (f"\n\n{note}" if note else "")


def smooth(x_SxK, window: int):
  """Trailing moving average over updates of the finite values (window 1: unchanged)."""
  x_SxK = np.asarray(x_SxK, np.float64)
  if window <= 1:
    return x_SxK
  finite = np.isfinite(x_SxK)
  pad = ((0, 0), (1, 0))
  c = np.cumsum(np.pad(np.where(finite, x_SxK, 0.0), pad), axis=1)
  n = np.cumsum(np.pad(finite.astype(np.float64), pad), axis=1)
  k = np.arange(1, x_SxK.shape[1] + 1)
  lo = np.maximum(k - window, 0)
  count = n[:, k] - n[:, lo]
  return np.where(count > 0, (c[:, k] - c[:, lo]) / np.maximum(count, 1), np.nan)


def _panel(ax, results, key, window, bounds, confidence, steps=None):
  """One metric: per run its seeds (thin), their mean and its clipped band; False if no run
  has a finite value of `key`. `steps`: the updates of its columns (default 0, 1, ...)."""
  drawn = False
  for i, (name, m) in enumerate(results.items()):
    if key not in m:
      continue
    x_SxK = smooth(m[key], window)
    n = seeds_with_values(x_SxK)
    if n == 0:
      continue
    drawn = True
    steps = np.arange(x_SxK.shape[1]) if steps is None else np.asarray(steps)
    colour = f"C{i}"
    marker = "o" if steps.size < 30 and np.any(np.diff(steps) > 1) else None
    for seed_curve in x_SxK:
      ax.plot(steps, seed_curve, color=colour, lw=0.4, alpha=0.3)
    mean, ci = mean_and_ci(x_SxK, confidence)
    ax.plot(steps, mean, color=colour, lw=2, marker=marker,
            label=f"{name}: mean of {n} seed{'s' if n != 1 else ''}")
    if n >= 2:
      ax.fill_between(steps, clip(mean - ci, bounds), clip(mean + ci, bounds), color=colour,
                      alpha=0.2, lw=0, label=f"{name}: {interval_label(n, confidence)}")
  return drawn


def curves_figure(results, metrics, best=None, smoothing=None, bounds=None, title=None,
                  confidence=0.95, steps=None):
  """The figure `plot_curves` saves (same arguments), left open for the caller."""
  smoothing, bounds, steps = smoothing or {}, bounds or {}, steps or {}
  ncols = min(2, len(metrics))
  nrows = -(-len(metrics) // ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 4 * nrows + (0.4 if title else 0)),
                           squeeze=False)
  for ax in axes.flat[len(metrics):]:
    ax.set_visible(False)
  for ax, key in zip(axes.flat, metrics):
    window = smoothing.get(key, 1)
    if not _panel(ax, results, key, window, bounds.get(key), confidence, steps.get(key)):
      ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center")
    if key == "exact_J" and best is not None:
      ax.axhline(best, color="k", ls="--", lw=1, label="max J")
    ax.set_xlabel("update")
    ax.set_ylabel(key + (f" (moving average of {window})" if window > 1 else ""))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
      ax.legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return fig


def plot_curves(results, path, best=None, metrics=("exact_J", "grad_cosine_to_exact"),
                smoothing=None, *, bounds=None, title=None, confidence=0.95, steps=None):
  """One panel per metric, one colour per run: seed mean, its band, thin per-seed lines;
  saved to `path` (returned).

  `results` maps a run's name to {metric: [seeds, updates]}. `smoothing` maps a metric to a
  trailing moving-average window (for noisy per-update metrics); `bounds` maps a metric to its
  range (lo, hi), None for unbounded, to which its band is clipped (`metric_bounds(task)`);
  `title` names the figure (the config). The legend states each band: "95% t-interval over
  n seeds", n counting the seeds with finite values. `steps` maps a metric measured at some
  updates only (a held-out score) to those updates.
  """
  fig = curves_figure(results, metrics, best, smoothing, bounds, title, confidence, steps)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
