"""The numbers in README.md and configs/*.py are reports/results.json's, and
`experiments/reproduce.py --smoke` runs without touching a tracked file."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as scipy_stats

from pg.reproduce import groups, markers, report, stats, values

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(ROOT, "reports", "results.json")
SCRIPT = os.path.join(ROOT, "experiments", "reproduce.py")


def test_every_marked_number_is_the_committed_result():
  assert os.path.exists(RESULTS), "no reports/results.json: run python experiments/reproduce.py"
  document = json.load(open(RESULTS, encoding="utf-8"))
  assert document["values"] == values.derive(document["results"]), (
      "results.json's values are not derived from its results: rerun the script")
  stale = [n for n, e in document["results"].items() if e.get("lock") != report.lock_digest()]
  assert not stale, f"made under other pins than requirements.lock's: {stale} (rerun them)"
  bad = markers.drift(document["values"])
  assert not bad, "numbers that differ from reports/results.json (run python " \
                  "experiments/reproduce.py --only <group>):\n" + "\n".join(
                      f"{f}: {k}: {have!r} != {want!r}" for f, k, have, want in bad)


def test_every_default_group_has_marked_numbers_and_a_reason_for_its_seeds():
  keys = {k for path in markers.marked_files() for k, _ in markers.find(open(path).read())}
  for g in groups.GROUPS:
    assert g.why
    if g.default:
      assert any(k.startswith(g.name + ".") for k in keys), f"no marked number of {g.name}"


def test_fill_keeps_the_layout_and_drift_finds_a_stale_number(tmp_path):
  path = tmp_path / "doc.md"
  path.write_text("a <!-- result:x.y -->1<!-- /result --> b\n<!-- result:t.able -->\n\n| old |"
                  "\n\n<!-- /result -->\n⟨x.y: 1⟩ and ⟨KEY: not a marker⟩ ⟨x.z:\n2 ± 3⟩\n")
  assert [k for k, _ in markers.find(path.read_text())] == ["x.y", "t.able", "x.y", "x.z"]
  missing = markers.fill_files({"x.y": "0.5 ± 0.1", "t.able": "| new |"}, [str(path)])
  assert missing == {str(path): ["x.z"]}
  text = path.read_text()
  assert "a <!-- result:x.y -->0.5 ± 0.1<!-- /result --> b" in text
  assert "<!-- result:t.able -->\n\n| new |\n\n<!-- /result -->" in text
  assert "⟨x.y: 0.5 ± 0.1⟩ and ⟨KEY: not a marker⟩" in text
  assert markers.drift({"x.y": "0.5 ± 0.1", "t.able": "| new |", "x.z": "2 ±  3"},
                       [str(path)]) == []
  (_, key, have, want), = markers.drift({"x.y": "0.5 ± 0.1", "t.able": "| new |",
                                         "x.z": "2 ± 4"}, [str(path)])
  assert (key, have, want) == ("x.z", "2 ± 3", "2 ± 4")


def test_window_means_and_the_t_interval_by_hand():
  x = np.array([[0.0] * 10 + [1.0] * 90, [0.5] * 100, [0.2] * 90 + [0.8] * 10])
  w = stats.windows(x)
  assert w["first10"]["per_seed"] == [0.0, 0.5, 0.2]
  assert w["last10"]["per_seed"] == [1.0, 0.5, 0.8]
  last = np.array([1.0, 0.5, 0.8])
  half = scipy_stats.t.ppf(0.975, 2) * last.std(ddof=1) / np.sqrt(3)
  assert w["last10"]["mean"] == pytest.approx(last.mean())
  assert w["last10"]["ci95"] == pytest.approx(half)
  assert stats.pm(w["last10"]) == f"{last.mean():.2f} ± {half:.2f}"
  assert stats.wall(97.4) == "97 s" and stats.wall(299) == "4 min 59 s"


def entry(last, first=(0.0, 0.0, 0.0, 0.0), wall=10.0):
  return {"command": "c", "seeds": len(last), "wall_s": wall, "updates": 400,
          "metrics": {"mean_score": {"first10": stats.summary(first),
                                     "last10": stats.summary(last)}},
          "updates_to_0.9": [3] * len(last)}


def test_comparisons_follow_welchs_test():
  rloo = entry([0.95, 0.97, 0.96, 0.98])
  v = values.derive({"default": rloo, "reinforce": entry([0.2, 0.3, 0.25, 0.35]),
                     "reinforce_ma": entry([0.9, 1.0, 0.93, 0.99])})
  assert v["reinforce.vs_default"].startswith("lower, p = ")
  assert v["reinforce_ma.vs_default"].startswith("not significantly different, p = ")
  assert v["default.last10"] == "0.96 ± 0.02" and v["default.seeds"] == "4"
  assert v["default.updates_to_0.9"] == "by update 3 in every seed"
  assert v["total.wall"] == "30 s"


def beta(kl_coef, gold, proxy, kl):
  w = lambda xs: {"first10": stats.summary(xs), "last10": stats.summary(xs)}
  return {"kl_coef": kl_coef, "metrics": {"gold_score": w(gold), "mean_score": w(proxy),
                                          "kl_to_ref": w(kl)}}


@pytest.mark.parametrize("gold_weak, says", [
    ([0.1, 0.2, 0.15, 0.12], "the over-optimisation of Gao et al. (2022)"),
    ([0.8, 0.7, 0.75, 0.9], "no significant over-optimisation"),
    ([0.95, 0.97, 0.99, 0.96], "does not over-optimise here; the gold score rises"),
])
def test_the_rlhf_conclusion_is_built_from_the_tests(gold_weak, says):
  betas = [beta(0.0, gold_weak, [15, 15.2, 14.9, 15.1], [120, 130, 125, 128]),
           beta(0.1, [0.8, 0.7, 0.85, 0.75], [14, 14.1, 13.9, 14.05], [70, 72, 75, 71])]
  text = values.rlhf_conclusion(betas, 4)
  assert says in text and "proxy score that is higher" in text


def tracked_digests():
  paths = markers.marked_files() + [os.path.join(ROOT, "reports", p) for p in (
      "results.json", "results.md", "estimator_lab/report.md")]
  return {p: hashlib.sha1(open(p, "rb").read()).hexdigest() if os.path.exists(p) else None
          for p in paths}


def smoke(tmp_path, only):
  before = tracked_digests()
  out = tmp_path / "out"
  subprocess.run([sys.executable, SCRIPT, "--smoke", "--only", only, "--out", str(out)],
                 check=True, timeout=1800, cwd=ROOT, capture_output=True, text=True)
  assert tracked_digests() == before, "--smoke wrote a tracked file"
  document = json.load(open(out / "results.json", encoding="utf-8"))
  assert "--smoke" in document["command"]
  assert (out / "results.md").read_text(encoding="utf-8").startswith("# Results")
  return document


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_the_smoke_run_writes_its_results_elsewhere(tmp_path):
  document = smoke(tmp_path, "demo")
  assert document["results"]["demo"]["seeds"] == 2
  assert "demo.wall" in document["values"]


@pytest.mark.slow  # a group of every kind compiled once: minutes on 2 cores
def test_the_smoke_run_of_a_group_of_every_kind(tmp_path):
  names = ["grpo"] + [next(g.name for g in groups.GROUPS if g.kind == kind)
                      for kind in dict.fromkeys(g.kind for g in groups.GROUPS)]
  names = list(dict.fromkeys(names))
  assert {groups.BY_NAME[n].kind for n in names} == {g.kind for g in groups.GROUPS}
  document = smoke(tmp_path, ",".join(names))
  assert set(document["results"]) == set(names)
  for name, e in document["results"].items():
    assert e["seeds"] <= 2 and e["wall_s"] > 0, name
  v = document["values"]
  assert {"default.last10", "rlhf.conclusion", "rlhf.table", "lab.main_table", "lab.brief",
          "sweep_lr.rloo.best", "bench.seeds_1.tokens_per_s"} <= set(v)
  assert "exact_accuracy" in document["results"]["grpo"]["metrics"]


def test_unknown_groups_are_named():
  with pytest.raises(ValueError, match="nope"):
    groups.select("default,nope")
  assert [g.name for g in groups.select("")] == [g.name for g in groups.GROUPS if g.default]
  assert report.RUNNERS.keys() >= {g.kind for g in groups.GROUPS}
