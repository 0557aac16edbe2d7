"""A sweep's results: per setting, final / best / area-under-curve scores with intervals across
seeds, as markdown, CSV, JSONL and figures."""

from __future__ import annotations

import csv
import json
import os
from typing import NamedTuple

import numpy as np

from pg.run import plotting
from pg.run.tables import markdown_table


class Stat(NamedTuple):
  mean: float        # across the seeds with a finite value (NaN if none)
  half_width: float  # of the 95% Student-t interval (0 for one seed)
  seeds: int         # how many seeds had a finite value


class Setting(NamedTuple):
  values: dict            # structural and continuous values of this setting
  curves_SxU: np.ndarray  # mean_score per seed and update
  final: Stat             # mean score over the last 10% of updates
  best: Stat              # over a window ending at the update where the seed mean peaks
  best_update: int        # -1 when no update has a finite score
  auc: Stat               # mean score over all updates


def _stat(v_S) -> Stat:
  """Mean and 95% half-width across seeds of per-seed values, NaN ones left out."""
  mean, half = plotting.mean_and_ci(np.asarray(v_S, np.float64)[:, None])
  return Stat(float(mean[0]), float(half[0]), int(np.sum(np.isfinite(v_S))))


def summarize(rows, continuous, structural, metric="mean_score") -> list[Setting]:
  """Per setting: final, best and area-under-curve of `metric`, with 95% Student-t intervals
  across seeds. Each seed contributes the mean of its finite values in the window; a seed with
  none there is left out of that statistic (NaN if every seed is)."""
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
    mean = plotting.finite_mean
    tail = _stat(mean(x[:, -max(1, U // 10):], axis=1))
    window = max(1, U // 20)
    smoothed_U = mean(plotting.smooth(x, window), axis=0)
    if np.any(np.isfinite(smoothed_U)):
      u_best = int(np.nanargmax(smoothed_U))
      best = _stat(mean(x[:, max(0, u_best - window + 1):u_best + 1], axis=1))
    else:
      u_best, best = -1, Stat(np.nan, np.nan, 0)
    out.append(Setting(dict(zip(names, key)), x, tail, best, u_best, _stat(mean(x, axis=1))))
  return out


def _fmt(v):
  return f"{v:.4g}" if isinstance(v, float) else str(v)


def _order(s):
  """Best final score first; settings without one last."""
  return (0, -s.final.mean) if np.isfinite(s.final.mean) else (1, 0.0)


def _csv_stat(stat):
  """(mean, half-width) cells: empty where there is no value, or no interval (one seed)."""
  if stat.seeds == 0:
    return "", ""
  return stat.mean, stat.half_width if stat.seeds > 1 else ""


def write_results(workdir, rows, summary, continuous, structural, log=print, *,
                  score_range=(None, None), title=None):
  """results.jsonl, results.md, results.csv, curves.png and score_vs_<name>.png.

  `score_range`: the score's bounds (`task.score_range`), to which the figures' bands are
  clipped; `title` names the figures (default: the workdir's name)."""
  with open(os.path.join(workdir, "results.jsonl"), "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  names = tuple(structural) + tuple(continuous)
  header = list(names) + ["seeds", "final score", "best score (update)", "area under curve"]
  order = sorted(summary, key=_order)
  rows_md = []
  for s in order:
    seeds = s.curves_SxU.shape[0]
    pm = lambda stat: plotting.format_stat(stat.mean, stat.half_width, stat.seeds, seeds)
    best = f"{pm(s.best)} ({s.best_update})" if s.best.seeds else plotting.NO_VALUES
    rows_md.append([_fmt(s.values[n]) for n in names] + [str(seeds), pm(s.final), best,
                                                         pm(s.auc)])
  note = ("final: mean score over the last 10% of updates; best: over a window of 5% of the "
          "updates ending where the seed mean peaks; area: mean score over all updates. "
          "± is a 95% Student-t interval across seeds; non-finite scores (skipped updates) "
          f"are left out, and {plotting.NO_VALUES} marks a statistic with no finite score.")
  table = markdown_table(header, rows_md) + "\n\n" + note + "\n"
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(table)
  with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(list(names) + ["seeds", "final", "final_ci95", "best", "best_ci95",
                              "best_update", "auc", "auc_ci95"])
    for s in order:
      w.writerow([s.values[n] for n in names] + [
          s.curves_SxU.shape[0], *_csv_stat(s.final), *_csv_stat(s.best),
          s.best_update if s.best.seeds else "", *_csv_stat(s.auc)])
  title = title or os.path.basename(os.path.normpath(workdir))
  figures = [plot_curves(workdir, summary, names, score_range, title)]
  for name in names:
    if len({s.values[name] for s in summary}) > 1:
      figures.append(plot_against(workdir, summary, name, names, score_range, title))
  log(table)
  log("results: " + ", ".join(os.path.join(workdir, p) for p in
                              ("results.md", "results.csv", "results.jsonl")))
  log("figures: " + ", ".join(figures))


def _label(values, names):
  return ", ".join(f"{n}={_fmt(values[n])}" for n in names) or "base"


def plot_curves(workdir, summary, names, score_range=(None, None), title=None):
  """curves.png: the score of every setting over updates, its band clipped to `score_range`."""
  results = {_label(s.values, names): {"mean_score": s.curves_SxU} for s in summary}
  U = summary[0].curves_SxU.shape[1] if summary else 1
  return plotting.plot_curves(results, os.path.join(workdir, "curves.png"),
                              metrics=("mean_score",),
                              smoothing={"mean_score": max(1, U // 20)},
                              bounds={"mean_score": score_range}, title=title)


def _seeds_text(members, field):
  n = sorted({getattr(s, field).seeds for s in members})
  return str(n[0]) if len(n) == 1 else f"{n[0]}–{n[-1]}"


def categorical(summary, name) -> bool:
  """Whether the swept `name` takes names or booleans (points) rather than numbers (lines)."""
  return not all(isinstance(s.values[name], (int, float)) and not isinstance(s.values[name], bool)
                 for s in summary)


def against_figure(summary, name, names, score_range=(None, None), title=None):
  """The figure `plot_against` saves, left open for the caller."""
  import matplotlib.pyplot as plt
  others = tuple(n for n in names if n != name)
  lines: dict = {}
  for s in summary:
    lines.setdefault(_label(s.values, others), []).append(s)
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.4 if title else 4))
  numeric = not categorical(summary, name)
  xs = sorted({s.values[name] for s in summary}, key=lambda v: v if numeric else str(v))
  log_x = numeric and min(xs) > 0 and max(xs) / min(xs) >= 10
  for i, (label, members) in enumerate(sorted(lines.items())):
    # Names are evenly spaced; the lines of other values side by side around each one.
    shift = 0.0 if numeric else 0.3 * ((i + 0.5) / len(lines) - 0.5)
    position = (lambda v: v) if numeric else (lambda v: xs.index(v) + shift)
    for ax, field in zip(axes, ("final", "auc")):
      kept = sorted((s for s in members if getattr(s, field).seeds),
                    key=lambda s: position(s.values[name]))
      if not kept:
        continue
      x = np.array([position(s.values[name]) for s in kept])
      mean = np.array([getattr(s, field).mean for s in kept])
      half = np.array([getattr(s, field).half_width for s in kept])
      lo, hi = plotting.clip(mean - half, score_range), plotting.clip(mean + half, score_range)
      band = f"95% t-interval over {_seeds_text(kept, field)} seeds"
      name_i = f"{label}: " if others else ""
      if numeric:
        ax.plot(x, mean, "o-", color=f"C{i}", label=f"{name_i}mean")
        ax.fill_between(x, lo, hi, color=f"C{i}", alpha=0.2, lw=0, label=name_i + band)
      else:
        ax.errorbar(x, mean, yerr=np.stack([mean - lo, hi - mean]), fmt="o", ls="none",
                    color=f"C{i}", capsize=4, label=f"{name_i}mean, bars: {band}")
  for ax, ylabel in zip(axes, ("final score (last 10% of updates)", "area under the curve")):
    ax.set_xlabel(name)
    ax.set_ylabel(ylabel)
    if log_x:
      ax.set_xscale("log")
    if not numeric:
      ax.set_xticks(range(len(xs)), [str(v) for v in xs])
      ax.set_xlim(-0.5, len(xs) - 0.5)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
      ax.legend(fontsize=7)
    else:
      ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center")
  fig.suptitle(f"{title}: score against {name}" if title else f"score against {name}")
  fig.tight_layout()
  return fig


def plot_against(workdir, summary, name, names, score_range=(None, None), title=None):
  """score_vs_<name>.png: final score and area under the curve against one swept value, one
  series per combination of the other swept values. Numbers: a line with a 95% band across
  seeds; names and booleans: points with 95% error bars, unjoined. Bands and bars are clipped
  to `score_range`."""
  import matplotlib.pyplot as plt
  fig = against_figure(summary, name, names, score_range, title)
  path = os.path.join(workdir, f"score_vs_{name}.png")
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
