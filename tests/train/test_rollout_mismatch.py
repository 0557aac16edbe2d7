"""Sampler–trainer mismatch in the compiled step: a bfloat16 sampler beside a float32 trainer,
bounded staleness from a ring buffer of past params (exactly the params of k updates ago), and
the rollout correction's weights and diagnostics."""

import jax
import numpy as np
import pytest

from pg import train
from pg.train import step as step_lib
from tiny_config import run_chunks, tiny


@pytest.mark.slow  # a whole training run; default suite under 9 min, CI runs it
def test_no_mismatch_changes_nothing():
  """Defaults: no extra metrics, the same numbers as a config without the new fields."""
  _, m, _ = run_chunks(tiny(), 1)
  assert "mismatch_k3" not in m and "is_ess" not in m


@pytest.mark.slow  # a whole training run; default suite under 9 min, CI runs it
def test_a_bfloat16_sampler_is_measured_and_corrected():
  c = tiny(sampler_dtype="bfloat16", rollout_correction="token_tis")
  _, m, _ = run_chunks(c, 1)
  assert np.all(m["mismatch_k3"] > 0)  # bf16 logits differ from f32 ones
  assert np.all(m["mismatch_k3"] < 1e-2)
  assert np.all((m["is_ess"] > 0.9) & (m["is_ess"] <= 1.0))
  assert np.all(np.isfinite(m["loss"]))


@pytest.mark.parametrize("k", [1, 3])
def test_staleness_samples_with_the_params_of_k_updates_ago(k):
  """The ring buffer after n updates holds the params that began updates n−k..n−1, so the
  sampler of update n draws with those of update n − k (the initial params before that)."""
  c = tiny(staleness=k, updates_per_chunk=1, num_seeds=1)
  task, policy = train.build(c)
  init, chunk = train.make_programs(c, task, policy)
  state = init(train.seed_keys(c), train.hparams_from_config(c))
  history = [jax.device_get(state.params)]  # (the chunk donates its input state)
  for _ in range(4):
    state, m = chunk(state)
    history.append(jax.device_get(state.params))
  n = 4
  for j in range(k):
    step = n - k + j  # slot step % k holds the params that began update `step`
    want = history[max(step, 0)]
    got = jax.tree_util.tree_map(lambda r: r[:, step % k], state.past_params)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
      np.testing.assert_array_equal(a, b)
  assert np.all(m["mismatch_k3"] > 0)  # stale samples: the trainer has moved since


@pytest.mark.slow  # a whole training run; default suite under 9 min, CI runs it
def test_staleness_zero_and_one_differ_only_by_the_behaviour_params():
  _, m0, _ = run_chunks(tiny(num_seeds=1), 1)
  _, m1, _ = run_chunks(tiny(num_seeds=1, staleness=1), 1)
  # Update 0 samples with the initial params either way: the same samples and scores.
  np.testing.assert_allclose(m0["mean_score"][:, 0], m1["mean_score"][:, 0])
  assert not np.allclose(m0["mean_score"], m1["mean_score"])


@pytest.mark.parametrize("field,value,match", [
    ("rollout_correction", "tis", "config.rollout_correction must be one of"),
    ("staleness", -1, "config.staleness must be an int >= 0"),
    ("sampler_dtype", "float16", "config.sampler_dtype must be"),
])
def test_bad_settings_are_refused_by_name(field, value, match):
  with pytest.raises(ValueError, match=match):
    train.build(tiny(**{field: value}))


@pytest.mark.slow  # a whole training run; default suite under 9 min, CI runs it
def test_the_off_policy_mask_drops_moved_negative_sequences():
  c = tiny(staleness=2, off_policy_mask=True)
  c.hparams.opsm_delta = 0.0
  _, m, _ = run_chunks(c, 1)
  assert np.all(np.isfinite(m["loss"]))
  assert np.any(m["is_rejected_fraction"][:, 2:] > 0)  # once the params have moved
  assert step_lib.TrainState.__dataclass_fields__["past_params"]


def test_the_correction_weights_multiply_the_policy_loss():
  """A band no ratio falls in (MIS, [10, 11]) rejects every token: no gradient, no step."""
  c = tiny(sampler_dtype="bfloat16", rollout_correction="token_mis", num_seeds=1)
  c.hparams.rc_low, c.hparams.rc_high = 10.0, 11.0
  task, policy = train.build(c)
  init, chunk = train.make_programs(c, task, policy)
  state = init(train.seed_keys(c), train.hparams_from_config(c))
  before = jax.device_get(state.params)
  state, m = chunk(state)
  np.testing.assert_allclose(m["is_rejected_fraction"], 1.0)
  for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(state.params)),
                  jax.tree_util.tree_leaves(before)):
    np.testing.assert_array_equal(a, b)
