"""The model, the sampler and the compiled train step, end to end on tiny configs."""

import os

import jax
import numpy as np
import pytest

import pg
from pg import train
from tiny_config import run_chunks, tiny

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_short_run_learns():
  config = tiny()
  _, m, _ = run_chunks(config, 8)  # 40 updates
  score = m["mean_score"]
  # Untrained: P(y_k = c) = 1/2 over the 2 symbols at best (~0.3 with the other tokens);
  # after 40 updates every seed must have gained at least 0.3.
  assert np.all(score[:, -5:].mean(1) > score[:, :5].mean(1) + 0.3), score[:, [0, -1]]


def test_seeds_differ_and_reruns_are_identical():
  config = tiny()
  _, m1, _ = run_chunks(config, 1)
  _, m2, _ = run_chunks(config, 1)
  for k in m1:
    np.testing.assert_array_equal(m1[k], m2[k], err_msg=k)  # same seeds: bit-identical
  assert not np.array_equal(m1["mean_score"][0], m1["mean_score"][1])  # seeds differ
  expected = {"mean_score", "advantage_mean", "advantage_std", "loss", "pg_loss",
              "entropy", "kl_to_ref", "clip_fraction", "grad_norm", "response_length",
              "truncated_fraction", "approx_kl_old", "ratio_mean"}
  assert expected <= set(m1)


def test_second_chunk_and_new_hyperparameters_do_not_recompile():
  config = tiny()
  init, chunk = train.make_programs(config, *train.build(config))
  keys = train.seed_keys(config)
  state = init(keys, train.hparams_from_config(config))
  state, a = chunk(state)
  state, _ = chunk(state)
  other = init(keys, pg.make_hparams(**{**config.hparams, "learning_rate": 1e-4,
                                        "temperature": 0.7, "entropy_coef": 0.1}))
  _, b = chunk(other)
  assert chunk._cache_size() == 1
  assert not np.allclose(a["loss"], b["loss"])  # the new values did take effect


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_on_policy_ratio_is_one():
  _, m, _ = run_chunks(tiny(policy_loss="ppo"), 1)
  np.testing.assert_allclose(m["ratio_mean"], 1.0, atol=1e-5)
  np.testing.assert_allclose(m["clip_fraction"], 0.0)


@pytest.mark.parametrize("override,match", [
    ({"advantage": "nope"}, "known: "),
    ({"policy_loss": "nope"}, "known: "),
    ({"aggregation": "mean"}, "config.aggregation"),
    ({"group_size": 1}, "config.group_size"),
    ({"advantage": "gae"}, "value_head"),
    ({"num_minibatches": 3}, "config.num_minibatches"),
    ({"kl_placement": "both"}, "config.kl_placement"),
    ({"num_seeds": 0}, "config.num_seeds"),
    ({"hparams": {"lam": 1.5}}, "`lam`"),
    ({"hparams": {"learning_rate": 0.0}}, "`learning_rate`"),
    ({"model": {"d_model": 31}}, "model.d_model"),
    ({"model": {"value_head": "big"}}, "model.value_head"),
    ({"task": {"name": "chess"}}, "unknown task"),
    ({"logprob_chunk_size": 0}, "logprob_chunk_size"),
])
def test_bad_config_fails_before_compiling(override, match):
  with pytest.raises((KeyError, ValueError), match=match):
    train.build(tiny(**override))


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_gradient_accumulation_matches_the_whole_minibatch():
  # seq-mean-token-sum is a mean over sequences, so equal micro-batches average to the same
  # gradient. (Parameters are compared through the gradient norm and loss of the first update:
  # after an Adam step, float noise in near-zero gradient entries becomes ±lr either way.)
  base = dict(aggregation="seq-mean-token-sum", updates_per_chunk=1, policy_loss="ppo")
  _, whole, _ = run_chunks(tiny(**base), 1)
  _, accum, _ = run_chunks(tiny(grad_accum_steps=4, **base), 1)
  # (Token-mean metrics such as entropy are means of micro-batch means: not compared.)
  for k in ("loss", "pg_loss", "grad_norm", "mean_score"):
    np.testing.assert_allclose(accum[k], whole[k], rtol=1e-5, err_msg=k)


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_bfloat16_compute_keeps_float32_master_weights_and_learns():
  state, m, _ = run_chunks(tiny(model={"dtype": "bfloat16"}), 8)
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(state.params)} == {np.dtype("float32")}
  assert all(np.isfinite(v).all() for v in m.values())
  score = m["mean_score"]  # each mean over 5 updates of 32 samples: standard error ≲ 0.1
  assert np.all(score[:, -5:].mean(1) > score[:, :5].mean(1) + 0.2), score[:, [0, -1]]


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_chunked_head_gives_the_same_update():
  _, dense, _ = run_chunks(tiny(updates_per_chunk=1), 1)
  _, chunked, _ = run_chunks(tiny(updates_per_chunk=1, logprob_chunk_size=3), 1)
  for k in ("loss", "grad_norm", "entropy", "mean_score"):
    np.testing.assert_allclose(chunked[k], dense[k], rtol=1e-5, atol=1e-6, err_msg=k)
