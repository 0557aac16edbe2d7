"""Each convention written down in pg/__init__.py and ../shared/CONVENTIONS.md, tested."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pg


def test_score_sits_on_the_last_generated_token():
  mask_BxT = jnp.array([[1, 1, 1, 0, 0],     # ends at t=2; TRL would use the first pad, t=3
                        [1, 1, 1, 1, 1],     # runs to the end
                        [1, 0, 1, 1, 0],     # gap inside: still the last generated, t=3
                        [0, 0, 0, 0, 0]], jnp.float32)  # empty row: no token, no reward
  rewards = pg.per_token_rewards(jnp.array([0.7, -1.0, 2.0, 5.0]), mask_BxT)
  expected = np.zeros((4, 5), np.float32)
  expected[0, 2], expected[1, 4], expected[2, 3] = 0.7, -1.0, 2.0
  np.testing.assert_array_equal(rewards, expected)
  np.testing.assert_array_equal(pg.last_token_mask(mask_BxT), expected != 0)


@pytest.mark.parametrize("mask_dtype", [jnp.int32, jnp.bool_, jnp.bfloat16, jnp.float32])
def test_reward_buffers_are_float32(mask_dtype):
  # Tunix built its buffer with zeros_like(int token ids) and turned 0.7 into 0.
  mask_BxT = jnp.array([[1, 1, 0]], mask_dtype)
  rewards = pg.per_token_rewards(jnp.array([0.7], jnp.bfloat16), mask_BxT,
                                 jnp.full((1, 3), 0.25, jnp.bfloat16), kl_coef=0.1)
  assert rewards.dtype == jnp.float32
  np.testing.assert_allclose(rewards, [[-0.025, 0.69921875 - 0.025, 0.0]], rtol=1e-6)
  out = pg.get_advantage("rloo")(pg.AdvantageInputs(jnp.array([1, 0], jnp.int32),
                                                    jnp.ones((2, 3), mask_dtype), group_size=2),
                                 pg.make_hparams(), pg.init_baseline_state())
  assert out.advantages_BxT.dtype == jnp.float32 and out.returns_BxT.dtype == jnp.float32
  np.testing.assert_allclose(out.advantages_BxT[:, 0], [1.0, -1.0])


def test_masked_means_divide_by_unmasked_count():
  x_BxT = jnp.array([[2.0, 4.0, 100.0, 100.0]])
  mask_BxT = jnp.array([[1.0, 1.0, 0.0, 0.0]])
  assert float(pg.masked_mean(x_BxT, mask_BxT)) == 3.0  # not (2 + 4) / 4
  assert float(pg.aggregate_loss(x_BxT, mask_BxT, "token-mean")) == 3.0
  assert float(pg.masked_mean(x_BxT, jnp.zeros_like(mask_BxT))) == 0.0  # never NaN


def test_returns_are_computed_before_whitening():
  mask_BxT = jnp.ones((3, 4))
  inputs = pg.AdvantageInputs(jnp.array([10.0, 20.0, 30.0]), mask_BxT)
  out = pg.get_advantage("reinforce_pp")(inputs, pg.make_hparams(gamma=1.0),
                                         pg.init_baseline_state())
  np.testing.assert_allclose(out.returns_BxT, [[10.0] * 4, [20.0] * 4, [30.0] * 4])
  assert abs(float(jnp.mean(out.advantages_BxT))) < 1e-5  # the advantages are the whitened ones


def test_log_ratios_are_clamped_before_exp():
  huge = jnp.array([[80.0, -80.0]])
  assert np.all(np.isfinite(pg.kl_k3(huge, jnp.zeros_like(huge))))
  loss, _ = pg.ppo_clipped_surrogate(huge, jnp.zeros_like(huge), jnp.array([[-1.0, 1.0]]),
                                     jnp.ones_like(huge))
  assert np.all(np.isfinite(loss))


def test_temperature_matches_the_sampling_distribution():
  # Behaviour log-probs must come from softmax(x / τ), the distribution the sampler draws from:
  # sample with jax.random.categorical(x / τ) and compare frequencies to exp(logp).
  logits_V = jnp.array([1.0, 0.0, -1.0, 0.5])
  tau, n = 0.5, 200_000
  samples = jax.random.categorical(jax.random.PRNGKey(0), logits_V / tau, shape=(n,))
  freq = np.bincount(np.asarray(samples), minlength=4) / n
  logits_BxTxV = jnp.broadcast_to(logits_V, (1, 4, 4))
  p = np.exp(pg.token_log_probs(logits_BxTxV, jnp.arange(4)[None], temperature=tau))[0]
  se = np.sqrt(p * (1 - p) / n)
  assert np.all(np.abs(freq - p) < 5 * se), (freq, p)  # 5σ: a false alarm is ~1e-6
  assert np.abs(p - np.exp(pg.token_log_probs(logits_BxTxV, jnp.arange(4)[None]))[0]).max() > 0.05


def test_groups_are_consecutive_rows():
  scores = jnp.array([1.0, 3.0, 10.0, 30.0])  # prompt 0: rows 0-1, prompt 1: rows 2-3
  np.testing.assert_allclose(pg.group_mean_advantages(scores, 2), [-1.0, 1.0, -10.0, 10.0])


def test_swept_hyperparameters_are_traced_leaves():
  hp = pg.make_hparams(gamma=0.9)
  leaves = jax.tree_util.tree_leaves(hp)
  assert len(leaves) == len(pg.hparams.spec())
  assert all(leaf.dtype == jnp.float32 and leaf.shape == () for leaf in leaves)
  # One compile serves any value.
  fn = jax.jit(lambda hp: pg.discounted_returns(jnp.ones((1, 3)), jnp.ones((1, 3)), hp["gamma"]))
  a, b = fn(hp), fn(pg.make_hparams(gamma=0.5))
  assert fn._cache_size() == 1
  np.testing.assert_allclose(a, [[1 + 0.9 + 0.81, 1.9, 1.0]], rtol=1e-6)
  np.testing.assert_allclose(b, [[1.75, 1.5, 1.0]], rtol=1e-6)
