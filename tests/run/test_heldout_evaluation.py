"""Held-out evaluation during a run: when it happens, what it writes, that it does not depend on
how problems are batched, that a resumed run evaluates each point once, and its refusals."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pg import train
from pg.policy import sampler
from pg.run import evaluation, experiment
from tiny_config import tiny

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "hf", "llama")
LLAMA = {"name": "llama", "num_layers": 1, "d_model": 32, "num_heads": 2, "num_kv_heads": 1,
         "mlp_dim": 64, "value_head": "none"}


def text_config(**overrides):
  c = tiny(model=dict(LLAMA), updates_per_chunk=2, num_chunks=2, num_prompts=4)
  c.task.name = "arithmetic"
  c.task.options = {"tokenizer": FIXTURE, "num_train": 30, "num_heldout": 5, "max_new_tokens": 6,
                    "max_operand": 4, "chat": False}
  c.eval_every, c.eval_samples, c.eval_batch = 2, 3, 2
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.mark.slow  # whole runs with evaluations; CI runs it
def test_evaluations_at_the_start_every_n_updates_and_the_end(tmp_path, capsys):
  c = text_config(num_chunks=3, eval_every=4)
  experiment.run(c, str(tmp_path))
  rows = evaluation.read(str(tmp_path))
  assert sorted({(r["update"], r["run"]) for r in rows}) == [
      (u, r) for u in (0, 4, 6) for r in (0, 1)]
  for row in rows:
    for k in ("greedy", "mean@3", "pass@1", "pass@2", "pass@3", "maj@3", "truncated",
              "no_answer"):
      assert 0.0 <= row["heldout_" + k] <= 1.0 and row[f"heldout_{k}_ci95"] >= 0.0
    assert row["heldout_pass@1"] == pytest.approx(row["heldout_mean@3"])
    assert row["heldout_pass@1"] <= row["heldout_pass@2"] <= row["heldout_pass@3"]
  details = json.load(open(tmp_path / "eval" / "update_000004.json"))
  problems = details["runs"][0]["problems"]
  assert len(problems) == 5 and len(problems[0]["samples"]) == 3
  out = capsys.readouterr().out
  assert "held-out at update 0: greedy" in out and "| held-out | update 0 | update 6 |" in out
  assert "hit max_new_tokens = 6 without an end token" in out  # a random model never ends


def test_the_scores_do_not_depend_on_the_batching_and_match_the_sampler(tmp_path):
  """Problem e draws with its own key: batches of 2 and of 5 give the same responses; the
  greedy ones are the sampler's greedy decoding of that prompt alone."""
  c = text_config()
  task, policy = train.build(c)
  init, _ = train.make_programs(c, task, policy)
  params = init(train.seed_keys(c), train.hparams_from_config(c)).params
  c.eval_batch = 2
  a = evaluation.Evaluator(c, task, policy, verbose=False).responses(params)
  c.eval_batch = 5
  b = evaluation.Evaluator(c, task, policy, verbose=False).responses(params)
  assert a[0] == b[0] and a[1] == b[1] and np.array_equal(a[2], b[2])
  prompt = jnp.asarray(task.heldout.prompts_ExP[3:4])
  params1 = jax.tree_util.tree_map(lambda x: x[1], params)
  s = sampler.sample(policy, params1, prompt, jax.random.PRNGKey(0), max_new_tokens=6,
                     eos_id=task.eos_id, pad_id=task.pad_id, greedy=True,
                     prompt_mask_NxP=task.prompt_mask(prompt), eos_ids=task.eos_ids)
  n = int(np.sum(np.asarray(s.mask_BxT[0])))
  ids = [int(t) for t in np.asarray(s.tokens_BxT[0])[:n] if int(t) not in task.stop_ids]
  assert a[0][1][3] == task.decode(ids)


@pytest.mark.slow  # whole runs with evaluations; CI runs it
def test_a_resumed_run_evaluates_each_point_once(tmp_path):
  c = text_config(num_chunks=1)
  experiment.run(c, str(tmp_path), verbose=False)
  assert sorted({r["update"] for r in evaluation.read(str(tmp_path))}) == [0, 2]
  c = text_config(num_chunks=2)
  experiment.run(c, str(tmp_path), verbose=False)
  updates = [r["update"] for r in evaluation.read(str(tmp_path))]
  assert sorted(updates) == [0, 0, 2, 2, 4, 4]


@pytest.mark.parametrize("field, value, match", [
    ("eval_every", 3, r"config.eval_every \(3\) must be a multiple of config.updates_per_chunk "
                      r"\(2\)"),
    ("eval_every", -1, r"config.eval_every must be an int >= 0"),
    ("eval_samples", -2, r"config.eval_samples must be an int >= 0"),
    ("eval_temperature", 0.0, r"config.eval_temperature must be > 0"),
])
def test_bad_evaluation_fields_are_refused_before_compiling(tmp_path, field, value, match):
  with pytest.raises(ValueError, match=match):
    experiment.run(text_config(**{field: value}), str(tmp_path), verbose=False)
  assert not os.path.exists(tmp_path / "metrics.jsonl")


def test_evaluation_needs_a_held_out_set(tmp_path):
  c = tiny(eval_every=5)
  with pytest.raises(ValueError, match=r"task 'needle' has no held-out set"):
    experiment.run(c, str(tmp_path), verbose=False)


def test_runs_with_identical_params_are_generated_once(monkeypatch):
  """Every seed of a pretrained start holds the same params: one generation, copied, gives
  exactly what generating for each run would."""
  c = text_config()
  task, policy = train.build(c)
  init, _ = train.make_programs(c, task, policy)
  params = init(train.seed_keys(c), train.hparams_from_config(c)).params
  same = jax.tree_util.tree_map(lambda x: jnp.stack([x[0], x[0]]), params)
  ev = evaluation.Evaluator(c, task, policy, verbose=False)
  assert evaluation.identical_runs(same) and not evaluation.identical_runs(params)
  copied = ev.responses(same)
  monkeypatch.setattr(evaluation, "identical_runs", lambda p: False)
  each = ev.responses(same)
  assert copied[0] == each[0] and copied[1] == each[1] and np.array_equal(copied[2], each[2])
