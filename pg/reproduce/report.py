"""Runs the groups, writes reports/results.json and results.md, fills the marked numbers.

`reproduce(only, smoke, rewrite)` runs each selected group in a fresh workdir, saves
results.json after each one (a later group's failure keeps the earlier results), then derives
the marker values from every entry (those of earlier runs kept for the groups not rerun) and
fills README.md and configs/*.py. `smoke` runs shrunk copies into a temporary folder and
touches no tracked file.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from importlib import metadata

from packaging.utils import canonicalize_name

from pg.lab import report as lab_report
from pg.reproduce import lock, markers, pipelines, stats
from pg.reproduce.groups import (BY_NAME, GROUPS, ROOT, run_bench, run_demo, run_sweep,
                                 run_train, select)
from pg.reproduce.values import derive
from pg.run.tables import markdown_table

REPORTS = os.path.join(ROOT, "reports")
RUNS = os.path.join(ROOT, "runs", "reproduce")
LAB_REPORT = os.path.join(REPORTS, "estimator_lab")
RUNNERS = {"train": run_train, "sweep": run_sweep, "demo": run_demo, "bench": run_bench,
           "rlhf": pipelines.run_rlhf, "lab": pipelines.run_lab}
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "scipy", "orbax-checkpoint",
            "vaderSentiment")
# Numbers of the README that no group here makes, and where they come from.
ELSEWHERE = (
    ("Speed: the reference problem's seeds table, the changes' before/after timings",
     "python experiments/bench_train.py --config configs/bench_reference.py --seeds 1 8 "
     "(this machine's timings: `--only bench` records one run here)"),
    ("Speed: time per update against length, width and seeds",
     "python experiments/bench_scaling.py (about 15 minutes)"),
    ("Speed: the matmul bound", "python experiments/bench_matmul_bound.py"),
    ("Sweeps: one program against one run at a time",
     "python experiments/bench_train.py --sweep"),
    ("Speed on one GPU (reports/gpu_h200/)", "bash experiments/gpu_check.sh, on an H200"),
    ("Set up: the test suite's run times", "pytest --durations=N (and CI=true pytest)"),
)


def lock_digest() -> str | None:
  """12 hex digits of the SHA-1 of requirements.lock's pins of the packages that compute the
  numbers (`PACKAGES`; None without a lock): each entry carries the one it was made under. A
  package that reads files or draws plots (safetensors, idna) changes no number, so its pin
  leaves the digest alone."""
  if not os.path.exists(lock.LOCK):
    return None
  numeric = {canonicalize_name(p) for p in PACKAGES}
  pins = [line for line in lock.locked()
          if canonicalize_name(line.split("==")[0]) in numeric]
  return hashlib.sha1("\n".join(pins).encode()).hexdigest()[:12]


def environment() -> dict:
  return {"python": platform.python_version(), "machine": platform.machine(),
          "cpus": os.cpu_count(), "lock": lock_digest(),
          "packages": {p: metadata.version(p) for p in PACKAGES}}


def load(path) -> dict:
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def reproduce(only=None, smoke=False, rewrite=True, out=None, workdir=None):
  """Runs the groups of `only` (default: every default group); returns results.json's dict."""
  groups = select(only)
  if smoke:
    out = out or tempfile.mkdtemp(prefix="pg-reproduce-smoke-")
    rewrite = False
  out = out or REPORTS
  workdir = workdir or (os.path.join(out, "runs") if smoke else RUNS)
  path = os.path.join(out, "results.json")
  saved = {} if smoke else load(path)
  results = saved.get("results", {})
  total = time.time()
  for i, group in enumerate(groups):
    print(f"\n[{i + 1}/{len(groups)}] {group.name}: {group.seeds if not smoke else 2} seeds "
          f"({group.why})", flush=True)
    run_dir = os.path.join(workdir, group.name)
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, never a resumed one
    results[group.name] = {**RUNNERS[group.kind](group, run_dir, smoke), "lock": lock_digest()}
    print(f"[{i + 1}/{len(groups)}] {group.name}: {stats.wall(results[group.name]['wall_s'])}",
          flush=True)
    document = write(out, results, smoke)
  print(f"\n{len(groups)} group(s) in {stats.wall(time.time() - total)}; "
        f"{os.path.join(out, 'results.md')}", flush=True)
  if rewrite:
    if any(g.name == "lab" for g in groups):
      lab_report.publish(os.path.join(workdir, "lab"), LAB_REPORT)
    missing = markers.fill_files(document["values"])
    for file, keys in missing.items():
      print(f"{os.path.relpath(file, ROOT)}: no value for {keys} (run those groups)")
  return document


def write(out, results, smoke) -> dict:
  """results.json (entries, environment, marker values) and results.md; returns the dict."""
  os.makedirs(out, exist_ok=True)
  order = [g.name for g in GROUPS if g.name in results]
  results = {n: results[n] for n in order}
  document = {"command": "python experiments/reproduce.py" + (" --smoke" if smoke else ""),
              "written": datetime.datetime.now().isoformat(timespec="seconds"),
              "environment": environment(), "results": results, "values": derive(results)}
  with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
    json.dump(document, f, indent=1, ensure_ascii=False)
    f.write("\n")
  with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
    f.write(markdown(document))
  return document


def _rows(label, metrics):
  return [[label, m, stats.pm(w["first10"], 3), stats.pm(w["last10"], 3),
           ", ".join(f"{v:.2f}" for v in w["last10"]["per_seed"])] for m, w in metrics.items()]


def _table(first_column, labelled):
  """One table for (label, metrics) pairs: a row per label and metric."""
  rows = [r for label, metrics in labelled for r in _rows(label, metrics)]
  return markdown_table([first_column, "metric", "first 10% of updates", "last 10% of updates",
                         "last 10%, per seed"], rows)


def section(name, e) -> str:
  """One group's part of results.md."""
  group = BY_NAME[name]
  lines = [f"## {name}", "", f"    {e['command']}", "",
           f"{e['seeds']} seeds ({group.why}); {e.get('updates', '—')} updates; wall time "
           f"{stats.wall(e['wall_s'])} (compile included, in one process).", ""]
  if "metrics" in e:
    lines.append(_table("config", [(name, e["metrics"])]))
  if "settings" in e:
    label = lambda v: ", ".join(f"{k} {x:g}" if isinstance(x, float) else f"{k} {x}"
                                for k, x in v.items())
    lines.append(_table("setting", [(label(s["values"]), s["metrics"]) for s in e["settings"]]))
  if "betas" in e:
    lines.append(_table("β", [(f"{b['kl_coef']:g}", b["metrics"]) for b in e["betas"]]))
    rows = [[s, k, f"{v:.3g}" if isinstance(v, float) else v]
            for s, m in e["stages"].items() for k, v in m.items()]
    lines += ["", markdown_table(["stage", "metric", "value"], rows), "",
              "Samples before and after RL (seed 0):", "", e["samples"]]
  if "estimators" in e:
    lines += [f"Max achievable J: {e['max_J']:.3f}.", "",
              _table("estimator", list(e["estimators"].items()))]
  if "main_table" in e:
    lines += [e["main_table"], "", e["brief"], "",
              "The full report: [estimator_lab/report.md](estimator_lab/report.md)."]
  if "rows" in e:
    lines += [f"Matmul peak measured in the run: {e['peak_gflops']:.0f} GFLOP/s "
              f"({e['cpus']} CPU cores).", "",
              markdown_table(list(e["rows"][0]), [[f"{v:.4g}" if isinstance(v, float) else v
                                                   for v in r.values()] for r in e["rows"]])]
  return "\n".join(lines).rstrip() + "\n"


def markdown(document) -> str:
  env = document["environment"]
  packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
  head = [
      "# Results", "",
      f"Written by `{document['command']}` ({document['written']}; Python {env['python']}, "
      f"{packages}; {env['cpus']} CPU cores; digest of requirements.lock's pins of those packages {env['lock']}). "
      "`--only NAME,...` reruns some groups and keeps the others' entries.", "",
      "Per group: the command that makes the same runs, the seeds and why, the wall time, and "
      "each metric's mean per seed over the first and the last 10% of updates, then its mean "
      "± the half-width of the 95% Student-t interval across seeds. Comparisons use Welch's "
      "t-test over the seeds. The numbers in README.md and configs/*.py marked "
      "`<!-- result:KEY -->` or `⟨KEY: …⟩` are the `values` of "
      "[results.json](results.json), filled in by the same command "
      "(`tests/reproduce/test_reproduce.py` checks that they agree).", ""]
  body = [section(n, e) for n, e in document["results"].items()]
  tail = ["## Not regenerated here", "",
          "Machine timings and the test suite's durations, with the commands that measure "
          "them:", "", markdown_table(["README numbers", "command"], ELSEWHERE), ""]
  return "\n".join(head) + "\n" + "\n".join(body) + "\n" + "\n".join(tail)
