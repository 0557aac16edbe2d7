"""Sweeps: one compile per group, the same numbers as one-by-one runs, splits, skips, errors;
and the research-fork example (its estimator and loss, by their math and through a sweep)."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pg
from pg.run import configs
from pg.run import experiment
from pg.run import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny(**sweep_values):
  c = configs.base_config()
  c.task.name = "target_token"
  c.task.options = {"vocab_size": 8, "prompt_len": 2, "length": 4, "target": 3}
  c.model.update(num_layers=1, d_model=16, num_heads=2)
  c.num_seeds, c.num_prompts, c.group_size = 2, 4, 2
  c.updates_per_chunk, c.num_chunks, c.checkpoint_every = 3, 2, 2
  for k, v in sweep_values.items():
    if k.startswith("model."):
      c.sweep.model[k.split(".")[1]] = v
    elif k in c.sweep:
      c.sweep[k] = v
    else:
      c[k] = v
  return c


def run_sweep(config, workdir):
  lines = []
  summary = sweep.run(config, str(workdir), verbose=False, log=lines.append)
  return summary, "\n".join(lines)


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


METRICS = ("mean_score", "loss", "grad_norm", "entropy")


def by_setting(rows, names):
  out = {}
  for r in rows:
    key = tuple(r[n] for n in names) + (r["seed"], r["update"])
    out[key] = r
  return out


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_sweep_equals_the_same_settings_run_one_by_one(tmp_path):
  config = tiny(learning_rate=(1e-3, 1e-2), entropy_coef=(0.0, 0.1))
  run_sweep(config, tmp_path / "sweep")
  rows = by_setting(read_jsonl(tmp_path / "sweep" / "results.jsonl"),
                    ("learning_rate", "entropy_coef"))
  assert len(rows) == 4 * 2 * 6  # settings × seeds × updates
  for lr in (1e-3, 1e-2):
    for ent in (0.0, 0.1):
      single = tiny()
      single.hparams.learning_rate, single.hparams.entropy_coef = lr, ent
      workdir = tmp_path / f"single_{lr}_{ent}"
      experiment.run(single, str(workdir), verbose=False, report_at_end=False)
      for r in read_jsonl(workdir / "metrics.jsonl"):
        s = rows[(lr, ent, r["seed"], r["update"])]
        for m in METRICS:
          np.testing.assert_allclose(s[m], r[m], rtol=2e-5, atol=1e-6,
                                     err_msg=f"{m} lr={lr} entropy={ent} {r}")


def test_continuous_values_share_one_compile_structural_ones_do_not(tmp_path, monkeypatch):
  compiles = []
  real = sweep.compile_programs

  def counting(group, runs, on_update=None):
    compiles.append((group.config.advantage, len(runs.labels)))
    return real(group, runs, on_update)
  monkeypatch.setattr(sweep.runner, "compile_programs", counting)
  config = tiny(advantage=("rloo", "grpo"), learning_rate=(1e-3, 3e-3, 1e-2))
  summary, log = run_sweep(config, tmp_path)
  assert compiles == [("rloo", 6), ("grpo", 6)]  # 3 rates × 2 seeds per compile
  assert len(summary) == 6 and "2 group(s)" in log
  with open(tmp_path / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert {(r["advantage"], float(r["learning_rate"])) for r in table} == {
      (a, lr) for a in ("rloo", "grpo") for lr in (1e-3, 3e-3, 1e-2)}
  for r in table:  # a 95% interval across 2 seeds, and scores in range
    assert 0.0 <= float(r["final"]) <= 1.0 and float(r["final_ci95"]) >= 0.0
    assert int(r["seeds"]) == 2
  md = (tmp_path / "results.md").read_text()
  assert sum(line.startswith("| ") for line in md.splitlines()) == 1 + 6 and "95%" in md
  for name in ("curves.png", "score_vs_learning_rate.png", "score_vs_advantage.png"):
    assert (tmp_path / name).stat().st_size > 0
  rows = read_jsonl(tmp_path / "results.jsonl")
  for r in rows:  # every row carries its run's full hyperparameters, swept ones included
    assert r["hparams"]["learning_rate"] == r["learning_rate"]
    assert r["hparams"]["kl_coef"] == config.hparams.kl_coef


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_one_seed_reports_no_interval(tmp_path):
  run_sweep(tiny(learning_rate=(1e-3, 1e-2), num_seeds=1), tmp_path)
  md = (tmp_path / "results.md").read_text()
  assert "(1 seed)" in md and "±" not in md.split("\n\n")[0]
  with open(tmp_path / "results.csv") as f:
    assert all(r["final_ci95"] == "" for r in csv.DictReader(f))


def test_summary_statistics_by_hand():
  rows = []
  curves = {0: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 0.9, 0.8],
            1: [0.0, 0.0, 0.2, 0.4, 0.6, 0.6, 0.8, 1.0, 1.0, 1.0]}
  for seed, curve in curves.items():
    rows += [{"seed": seed, "update": u, "learning_rate": 0.1, "mean_score": v}
             for u, v in enumerate(curve)]
  (s,) = sweep.summarize(rows, ("learning_rate",), ())
  x = np.array([curves[0], curves[1]])
  t = 12.706  # Student t, 1 degree of freedom, 97.5%
  final = x[:, -1]
  assert s.final[0] == pytest.approx(final.mean())
  assert s.final[1] == pytest.approx(t * final.std(ddof=1) / np.sqrt(2), rel=1e-3)
  assert s.auc[0] == pytest.approx(x.mean())
  assert s.best_update == 7 and s.best[0] == pytest.approx(1.0)


@pytest.mark.slow  # default suite under 10 min; CI runs it
def test_a_grid_too_large_for_the_budget_is_split_and_gives_the_same_numbers(tmp_path):
  whole = tiny(learning_rate=(1e-3, 1e-2))
  run_sweep(whole, tmp_path / "whole")
  split = tiny(learning_rate=(1e-3, 1e-2), memory_budget_mib=1e-3)  # 1 KiB: one run per batch
  _, log = run_sweep(split, tmp_path / "split")
  assert "split into 4 batches of 1 runs" in log
  assert len(os.listdir(tmp_path / "split" / "groups" / "base")) == 4
  a = by_setting(read_jsonl(tmp_path / "whole" / "results.jsonl"), ("learning_rate",))
  b = by_setting(read_jsonl(tmp_path / "split" / "results.jsonl"), ("learning_rate",))
  assert a.keys() == b.keys()
  for k in a:
    for m in METRICS:
      np.testing.assert_allclose(a[k][m], b[k][m], rtol=2e-5, atol=1e-6, err_msg=f"{m} {k}")


def test_runs_per_batch_caps_batches():
  assert sweep.batch_sizes(10, 4) == [4, 4, 2]
  assert sweep.batch_sizes(8, 4) == [4, 4]
  assert sweep.batch_sizes(3, 10) == [3]
  for n in range(1, 40):
    for cap in range(1, 12):
      sizes = sweep.batch_sizes(n, cap)
      assert sum(sizes) == n and max(sizes) <= cap and len(set(sizes)) <= 2


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_rerun_skips_finished_runs_and_a_wider_grid_runs_only_the_new_ones(tmp_path):
  run_sweep(tiny(learning_rate=(1e-3, 1e-2)), tmp_path)
  first = read_jsonl(tmp_path / "results.jsonl")
  _, log = run_sweep(tiny(learning_rate=(1e-3, 1e-2)), tmp_path)
  assert "all 4 runs finished before, skipped" in log
  assert read_jsonl(tmp_path / "results.jsonl") == first
  _, log = run_sweep(tiny(learning_rate=(1e-3, 1e-2, 3e-2)), tmp_path)
  assert "4 runs finished before, skipped; 2 to go" in log
  rows = read_jsonl(tmp_path / "results.jsonl")
  assert len(rows) == 3 * 2 * 6
  assert [r for r in rows if r["learning_rate"] != 3e-2] == first


def test_rerun_with_another_config_outside_the_grid_is_refused_not_reused(tmp_path):
  run_sweep(tiny(learning_rate=(1e-3, 1e-2)), tmp_path)
  changed = tiny(learning_rate=(1e-3, 1e-2))
  changed.hparams.entropy_coef = 0.5  # not swept: the finished runs were made without it
  with pytest.raises(ValueError, match=r"different config \(fields \['hparams'\]\)"):
    run_sweep(changed, tmp_path)
  longer = tiny(learning_rate=(1e-3, 1e-2), num_chunks=3)  # more chunks: allowed, resumes
  _, log = run_sweep(longer, tmp_path)
  assert "finished before" not in log
  assert len(read_jsonl(tmp_path / "results.jsonl")) == 2 * 2 * 9


@pytest.mark.parametrize("values,match", [
    ({"learning_rate": (0.0, 1e-3)}, r"sweep.learning_rate.*learning_rate"),
    ({"lam": (0.5, 1.5)}, r"sweep.lam"),
    ({"learning_rate": ()}, r"sweep.learning_rate must be a non-empty tuple"),
    ({"learning_rate": (1e-3, 1e-3)}, r"sweep.learning_rate repeats"),
    ({"learning_rate": ("fast",)}, r"sweep.learning_rate must hold numbers"),
    ({"advantage": ("rloo", "nope")}, r"sweep: the setting \{'advantage': 'nope'\}.*known"),
    ({"advantage": ("(rloo, grpo)",)}, r"quote names"),
    ({"group_size": (1, 2)}, r"config.group_size must be >= 2"),
    ({"model.d_model": (16, 15)}, r"model.d_model"),
    ({"runs_per_batch": -1}, r"sweep.runs_per_batch must be an int >= 0"),
])
def test_bad_sweeps_fail_before_compiling(values, match, tmp_path, monkeypatch):
  monkeypatch.setattr(sweep.runner, "compile_programs", lambda *a: pytest.fail("compiled"))
  with pytest.raises((ValueError, KeyError), match=match):
    run_sweep(tiny(**values), tmp_path)


def test_train_script_refuses_a_sweep_config():
  with pytest.raises(ValueError, match="experiments/sweep.py"):
    sweep.check_not_a_sweep(tiny(learning_rate=(1e-3, 1e-2)))
  sweep.check_not_a_sweep(tiny())  # no sweep values: fine


@pytest.mark.slow
def test_command_line_sweep_values(tmp_path):
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "sweep.py"),
         "--config", os.path.join(ROOT, "configs", "sweep_lr.py"), f"--workdir={tmp_path}",
         "--config.sweep.learning_rate=(1e-3, 3e-3)", "--config.sweep.advantage=('rloo',)",
         "--config.num_seeds=1", "--config.num_chunks=1", "--config.updates_per_chunk=2",
         "--config.model.num_layers=1", "--config.num_prompts=4"]
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
  with open(tmp_path / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert sorted(float(r["learning_rate"]) for r in table) == [1e-3, 3e-3]


# ---------------------------------------------------------------------------------------------
# The research-fork example: experiments/fork_example.

def load_fork_config():
  if "rank" not in pg.ADVANTAGE_ESTIMATORS:  # (another test may have reset the registries)
    for name in [m for m in sys.modules if m.startswith("pg_imported_") and "my_estimators" in m]:
      sys.modules.pop(name)
  path = os.path.join(ROOT, "experiments", "fork_example", "sweep_config.py")
  spec = importlib.util.spec_from_file_location("fork_sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)  # registers "rank" and "w_reinforce" (once)
  return module.get_config()


def test_fork_registers_its_functions_by_name():
  load_fork_config()
  load_fork_config()  # loading the config again does not register twice
  assert "rank" in pg.ADVANTAGE_ESTIMATORS and "w_reinforce" in pg.POLICY_LOSSES


def test_fork_rank_advantages_by_hand():
  load_fork_config()
  scores = jnp.array([1.0, 3.0, 2.0, 2.0, 5.0, 5.0, 5.0, 5.0])
  mask = jnp.ones((8, 3))
  hp = pg.make_hparams()
  out = pg.get_advantage("rank")(pg.AdvantageInputs(scores, mask, group_size=4), hp, None)
  np.testing.assert_allclose(out.advantages_BxT[:, 0], [-1, 1, 0, 0, 0, 0, 0, 0], atol=1e-6)
  np.testing.assert_allclose(out.advantages_BxT, out.advantages_BxT[:, :1] * mask)


def test_fork_w_reinforce_down_weights_positive_samples():
  load_fork_config()
  loss_fn = pg.get_policy_loss("w_reinforce")
  hp = pg.make_hparams(w_reinforce_lambda=0.1)
  old = jnp.zeros((1, 3))
  adv = jnp.array([[2.0, 0.0, -1.0]])
  mask = jnp.ones((1, 3))

  def total(logp):
    loss, _ = loss_fn(pg.PolicyLossInputs(logp, old, adv, mask), hp)
    return loss.sum()
  grad = jax.grad(total)(jnp.log(jnp.array([[0.5, 0.5, 0.5]])))
  # −λ·A where A > 0, −A elsewhere: the positive sample's push is a tenth of REINFORCE's.
  np.testing.assert_allclose(grad, [[-0.2, 0.0, 1.0]], rtol=1e-6)


@pytest.mark.slow  # default suite under 10 min; CI runs it
def test_fork_sweep_runs_against_the_built_ins(tmp_path):
  config = load_fork_config()
  with config.unlocked():
    config.num_seeds, config.num_chunks, config.updates_per_chunk = 1, 1, 2
    config.num_prompts = 4
    config.model.update(num_layers=1, d_model=16, num_heads=2)
    config.sweep.policy_loss = ("w_reinforce",)  # 2 of the 4 groups: the fork's loss, both estimators
  assert len(sweep.groups(load_fork_config())) == 4
  summary, log = run_sweep(config, tmp_path)
  assert "2 group(s)" in log
  assert {(s.values["advantage"], s.values["policy_loss"]) for s in summary} == {
      ("rloo", "w_reinforce"), ("rank", "w_reinforce")}
  for s in summary:
    assert np.all(np.isfinite(s.curves_SxU))
