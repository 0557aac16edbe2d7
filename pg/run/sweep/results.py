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
  order = sorted(summary, key=lambda s: -s.final[0])
  rows_md = []
  for s in order:
    seeds = s.curves_SxU.shape[0]
    pm = (lambda stat: f"{stat[0]:.3f} ± {stat[1]:.3f}") if seeds > 1 else (
        lambda stat: f"{stat[0]:.3f} (1 seed)")
    rows_md.append([_fmt(s.values[n]) for n in names] + [
        str(seeds), pm(s.final), f"{pm(s.best)} ({s.best_update})", pm(s.auc)])
  note = ("final: mean score over the last 10% of updates; best: over a window of 5% of the "
          "updates ending where the seed mean peaks; area: mean score over all updates. "
          "± is a 95% Student-t interval across seeds.")
  table = markdown_table(header, rows_md) + "\n\n" + note + "\n"
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


