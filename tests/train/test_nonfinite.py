"""A NaN reward is caught: "stop" saves the last good state and names the update, run and
quantity; "skip" drops those updates and counts them; no checkpoint ever holds NaN params."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from pg.run import configs
from pg.run import experiment
from pg import tasks
from pg import train


def sometimes_nan_task():
  """target_token, except that a batch whose prompt rows start with 0, 0 scores NaN."""
  base = tasks.target_token(vocab_size=4, prompt_len=2, length=3, target=1)

  def score(prompts_BxP, tokens_BxT, mask_BxT):
    r = base.score(prompts_BxP, tokens_BxT, mask_BxT)
    poisoned = (prompts_BxP[:, 0] == 0) & (prompts_BxP[:, 1] == 0)
    return jnp.where(poisoned, jnp.nan, r)
  return tasks.Task("sometimes_nan", 4, 2, 3, base.eos_id, base.pad_id, base.sample_prompts,
                    score)


@pytest.fixture
def nan_task():
  """The task object, handed down to the programs (nothing is registered)."""
  return sometimes_nan_task()


def config(mode):
  c = configs.base_config()
  c.task.name = "sometimes_nan"
  c.model.update(num_layers=1, d_model=16, num_heads=2)
  c.num_seeds, c.num_prompts, c.group_size = 2, 2, 2
  c.updates_per_chunk, c.num_chunks, c.checkpoint_every = 5, 4, 1
  c.on_nonfinite = mode
  c.max_skipped_fraction = 1.0  # the threshold has its own tests (tests/run/test_nonfinite_runs.py)
  return c


def restored_params(workdir):
  with ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints"))) as m:
    state = m.restore(m.latest_step(), args=ocp.args.StandardRestore())
  return state, m.latest_step()


def rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_stop_names_the_quantity_and_saves_the_last_good_state(tmp_path, nan_task):
  with pytest.raises(FloatingPointError, match=r"non-finite reward at update (\d+) of run "
                                               r"\d+ \(seed=\d\).*on_nonfinite='skip'") as e:
    experiment.run(config("stop"), str(tmp_path), task=nan_task, verbose=False)
  update = int(e.value.args[0].split("at update ")[1].split()[0])
  first_bad = min(r["update"] for r in rows(tmp_path) if r["nonfinite_reward"] > 0)
  assert update == first_bad
  state, _ = restored_params(str(tmp_path))
  for leaf in jax.tree_util.tree_leaves(state["params"]):
    assert np.all(np.isfinite(leaf))
  assert bool(np.any(state["halted"]))


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_skip_drops_the_bad_updates_counts_them_and_finishes(tmp_path, nan_task):
  experiment.run(config("skip"), str(tmp_path), task=nan_task, verbose=False)
  log = rows(tmp_path)
  bad = [r for r in log if r["nonfinite_reward"] > 0]
  assert bad and all(r["skipped"] == 1.0 for r in bad)
  assert all(r["skipped"] == 0.0 for r in log if r["nonfinite_reward"] == 0)
  state, step = restored_params(str(tmp_path))
  assert step == 4 and not np.any(state["halted"])
  for leaf in jax.tree_util.tree_leaves(state["params"]):
    assert np.all(np.isfinite(leaf))


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_a_skipped_update_leaves_the_parameters_untouched(nan_task):
  c = config("skip")
  c.updates_per_chunk = 1
  init, chunk = train.make_programs(c, *train.build(c, nan_task))
  state = init(train.seed_keys(c), train.hparams_from_config(c))
  for _ in range(40):  # until some update is poisoned
    before = jax.tree_util.tree_map(np.asarray, state.params)
    state, m = chunk(state)
    skipped = np.asarray(m["skipped"])[:, 0]
    if skipped.any():
      r = int(np.argmax(skipped))
      jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a[r], b[r]),
                             before, jax.tree_util.tree_map(np.asarray, state.params))
      return
  pytest.fail("no poisoned update in 40 tries")


def test_bad_mode_is_refused(nan_task):
  c = config("ignore")
  with pytest.raises(ValueError, match="config.on_nonfinite must be one of"):
    train.build(c, nan_task)


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_a_corrupted_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
  from pg.run import configs as cfgs
  c = cfgs.base_config()
  c.task.name = "target_token"
  c.task.options = {"vocab_size": 4, "prompt_len": 2, "length": 3, "target": 1}
  c.model.update(num_layers=1, d_model=16, num_heads=2)
  c.num_seeds, c.num_prompts, c.group_size = 2, 2, 2
  c.updates_per_chunk, c.num_chunks, c.checkpoint_every = 3, 3, 1
  whole = experiment.run(c, str(tmp_path / "whole"), verbose=False)
  experiment.run(c, str(tmp_path / "hurt"), verbose=False)
  latest = tmp_path / "hurt" / "checkpoints" / "3"
  damaged = [p for p in latest.rglob("*") if p.is_file() and p.stat().st_size > 0
             and p.parent.name == "d"]  # the array data files
  assert damaged
  for p in damaged:  # truncate every data file of the newest checkpoint
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
  with open(tmp_path / "hurt" / "metrics.jsonl") as f:
    assert len(f.readlines()) == 2 * 9
  again = experiment.run(c, str(tmp_path / "hurt"), verbose=True, report_at_end=False)
  out = capsys.readouterr().out
  assert "checkpoint of chunk 3" in out and "falling back" in out
  assert "resumed from" in out and "at chunk 2" in out
  jax.tree_util.tree_map(np.testing.assert_array_equal, whole.params, again.params)
  assert rows(tmp_path / "whole") == rows(tmp_path / "hurt")  # no duplicated metrics


def test_metrics_log_drops_a_line_cut_short_and_rows_past_the_checkpoint(tmp_path):
  path = tmp_path / "metrics.jsonl"
  full = [json.dumps({"run": 0, "seed": 0, "update": u, "loss": 0.5}) for u in range(4)]
  path.write_text("\n".join(full) + "\n" + full[0][:17])  # a kill in the middle of a write
  log = experiment.MetricsLog(str(path), keep_updates_below=3)
  assert [json.loads(x)["update"] for x in path.read_text().splitlines()] == [0, 1, 2]
  log.append({"loss": np.array([[0.25]])}, first_update=3)
  assert [json.loads(x)["update"] for x in path.read_text().splitlines()] == [0, 1, 2, 3]
