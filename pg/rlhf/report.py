"""The RLHF report: gold and proxy against √KL for each β (Gao et al., 2022), and whether the
β differ, tested across seeds.

Each run's final value of a metric is its mean over the last 10% of updates. Per β: the mean
over seeds with its 95% t-interval; between each β and the smallest one: the difference of
means, its 95% Welch interval and the two-sided Welch t-test p-value (seeds are independent
runs; no equal-variance assumption).
"""

from __future__ import annotations

import os

import numpy as np

from pg.run import plotting
from pg.run.tables import markdown_table

METRICS = ("gold_score", "mean_score", "kl_to_ref")
NAMES = {"gold_score": "gold (VADER)", "mean_score": "proxy (reward model)",
         "kl_to_ref": "KL to π_ref"}


def curves(rows, default_beta):
  """{β: {metric: [seeds, updates]}} from the sweep's results.jsonl rows."""
  out = {}
  for beta in sorted({r.get("kl_coef", default_beta) for r in rows}):
    mine = [r for r in rows if r.get("kl_coef", default_beta) == beta]
    seeds = sorted({r["seed"] for r in mine})
    U = 1 + max(r["update"] for r in mine)
    c = {k: np.full((len(seeds), U), np.nan) for k in METRICS}
    for r in mine:
      for k in METRICS:
        v = r.get(k)
        c[k][seeds.index(r["seed"]), r["update"]] = np.nan if v is None else v
    out[beta] = c
  return out


def final(x_SxU):
  """Each seed's mean over the last 10% of updates."""
  window = max(1, x_SxU.shape[1] // 10)
  return plotting.finite_mean(x_SxU[:, -window:], axis=1)


def first(x_SxU):
  """Each seed's mean over the first 10% of updates."""
  window = max(1, x_SxU.shape[1] // 10)
  return plotting.finite_mean(x_SxU[:, :window], axis=1)


def one_sample(x):
  """(mean, 95% t half-width, two-sided p of mean = 0) of the finite values of `x`."""
  from scipy import stats
  x = np.asarray(x, np.float64)
  x = x[np.isfinite(x)]
  if len(x) < 2:
    return float(np.mean(x)) if len(x) else np.nan, np.nan, np.nan
  se = np.std(x, ddof=1) / np.sqrt(len(x))
  half = float(stats.t.ppf(0.975, len(x) - 1) * se)
  p = float(stats.ttest_1samp(x, 0.0).pvalue) if se > 0 else (0.0 if np.mean(x) else 1.0)
  return float(np.mean(x)), half, p


def change_table(c) -> tuple[str, dict]:
  """Markdown: per β, gold and proxy from each run's first 10% of updates to its last 10%
  (mean change ± 95% t-interval across seeds, one-sample t-test p): did RL move them?"""
  rows, numbers = [], {}
  for beta in sorted(c):
    cells = [f"{beta:g}", str(c[beta]["gold_score"].shape[0])]
    for k in ("gold_score", "mean_score"):
      start, end = first(c[beta][k]), final(c[beta][k])
      d, half, p = one_sample(end - start)
      cells.append(f"{np.nanmean(start):.3f} → {np.nanmean(end):.3f}: {d:+.3f} ± {half:.3f} "
                   f"(p = {p:.2g})")
      numbers[f"β = {beta:g}: {k} change"] = d
      numbers[f"β = {beta:g}: {k} change p"] = p
    rows.append(cells)
  return markdown_table(["β", "seeds", "gold: first 10% → last 10%, change (95%)",
                         "proxy: first 10% → last 10%, change (95%)"], rows), numbers


def tests_table(c) -> tuple[str, dict]:
  """Markdown: per β the final gold, proxy and KL (± 95% t-interval across seeds), then each β
  against the smallest (difference, Welch interval, p); and the same numbers as a dict."""
  betas = sorted(c)
  rows, numbers = [], {}
  for beta in betas:
    cells = [f"{beta:g}", str(c[beta]["gold_score"].shape[0])]
    for k in METRICS:
      x = final(c[beta][k])
      mean, half = plotting.mean_and_ci(x[:, None])
      cells.append(plotting.format_stat(mean[0], half[0], int(np.sum(np.isfinite(x)))))
      numbers[f"β = {beta:g}: {k}"] = float(mean[0])
    rows.append(cells)
  table = markdown_table(["β", "seeds"] + [NAMES[k] + ", last 10%" for k in METRICS], rows)
  base = betas[0]
  diffs = []
  for beta in betas[1:]:
    cells = [f"{beta:g} − {base:g}"]
    for k in ("gold_score", "mean_score"):
      d, half, p = plotting.welch(final(c[base][k]), final(c[beta][k]))
      cells.append(f"{d:+.3f} ± {half:.3f} (p = {p:.2g})")
      numbers[f"β = {beta:g} − {base:g}: {k} p"] = p
      numbers[f"β = {beta:g} − {base:g}: {k} difference"] = d
    diffs.append(cells)
  if diffs:
    table += "\n\n" + markdown_table(
        ["β against the smallest", "gold difference (Welch 95%)", "proxy difference (Welch 95%)"],
        diffs)
  return table, numbers


def gold_vs_proxy(rows, default_beta, workdir) -> dict:
  """gold_vs_proxy.png and tests.md in `workdir`; returns the summary's numbers."""
  import matplotlib.pyplot as plt
  c = curves(rows, default_beta)
  fig, axes = plt.subplots(1, 2, figsize=(12, 4))
  for i, (beta, m) in enumerate(c.items()):
    window = max(1, m["gold_score"].shape[1] // 10)
    kl = plotting.smooth(m["kl_to_ref"], window).mean(axis=0)
    x = np.sqrt(np.maximum(kl, 0.0))
    for ax, key in zip(axes, ("gold_score", "mean_score")):
      y_SxU = plotting.smooth(m[key], window)
      mean, half = plotting.mean_and_ci(y_SxU)
      n = y_SxU.shape[0]
      ax.plot(x, mean, color=f"C{i}", label=f"β = {beta:g} ({n} seeds)")
      if n >= 2:
        ax.fill_between(x, mean - half, mean + half, color=f"C{i}", alpha=0.2, lw=0)
  for ax, key in zip(axes, ("gold_score", "mean_score")):
    ax.set_xlabel("√KL(π ‖ π_ref) (nats, per sequence; seed mean)")
    ax.set_ylabel(NAMES[key] + ", band: " + plotting.interval_label(
        next(iter(c.values()))[key].shape[0]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "gold_vs_proxy.png"), dpi=120)
  plt.close(fig)
  table, numbers = tests_table(c)
  changes, change_numbers = change_table(c)
  with open(os.path.join(workdir, "tests.md"), "w") as f:
    f.write(table + "\n\nFinal = each run's mean over its last 10% of updates; ± is a 95% "
            "t-interval across seeds; p: two-sided Welch t-test across seeds.\n\n" + changes +
            "\n\nChange = each run's last 10% minus its first 10% of updates; ± a 95% "
            "t-interval across seeds; p: two-sided one-sample t-test of no change.\n")
  return {**numbers, **change_numbers}
