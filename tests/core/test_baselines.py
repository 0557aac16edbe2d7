"""Baselines and registered advantage estimators against their formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pg

SCORES_B = jnp.array([1.0, 0.0, 0.5, 0.5, 2.0, -1.0, 0.0, 3.0])  # two groups of 4
G = 4


def loop_formulas(scores, g):
  out = {"group_mean": [], "rloo": [], "grpo": [], "grpo_pop": []}
  for p in range(len(scores) // g):
    grp = np.asarray(scores[p * g:(p + 1) * g], np.float64)
    for i in range(g):
      others = np.delete(grp, i)
      out["group_mean"].append(grp[i] - grp.mean())
      out["rloo"].append(grp[i] - others.mean())
      out["grpo"].append((grp[i] - grp.mean()) / (grp.std(ddof=1) + 1e-6))
      out["grpo_pop"].append((grp[i] - grp.mean()) / (grp.std(ddof=0) + 1e-6))
  return {k: np.array(v) for k, v in out.items()}


def test_group_baselines_match_loops():
  ref = loop_formulas(SCORES_B, G)
  np.testing.assert_allclose(pg.group_mean_advantages(SCORES_B, G), ref["group_mean"], rtol=1e-6)
  np.testing.assert_allclose(pg.rloo_advantages(SCORES_B, G), ref["rloo"], rtol=1e-6)
  np.testing.assert_allclose(pg.grpo_advantages(SCORES_B, G), ref["grpo"], rtol=1e-5)
  np.testing.assert_allclose(pg.grpo_advantages(SCORES_B, G, unbiased_std=False),
                             ref["grpo_pop"], rtol=1e-5)
  # RLOO = G/(G−1) × group mean.
  np.testing.assert_allclose(pg.rloo_advantages(SCORES_B, G),
                             G / (G - 1) * pg.group_mean_advantages(SCORES_B, G), rtol=1e-6)


def test_grpo_epsilon_and_degenerate_groups():
  same = jnp.ones(6)
  np.testing.assert_array_equal(pg.grpo_advantages(same, 3), 0.0)  # zero std: A = 0, not NaN
  np.testing.assert_array_equal(pg.grpo_advantages(SCORES_B, 1), 0.0)  # singleton groups
  big_eps = pg.grpo_advantages(SCORES_B, G, eps=10.0)
  small_eps = pg.grpo_advantages(SCORES_B, G)
  nonzero = np.abs(small_eps) > 0
  assert np.all(np.abs(big_eps)[nonzero] < np.abs(small_eps)[nonzero])


def test_moving_average_is_explicit_state_and_bias_corrected():
  state = pg.init_baseline_state()
  assert float(pg.moving_average_baseline(state)) == 0.0
  decay = 0.9
  batches = [jnp.array([1.0, 3.0]), jnp.array([5.0, 7.0]), jnp.array([0.0, 0.0])]
  weights = []
  for k, batch in enumerate(batches):
    adv, new_state = pg.moving_average_advantages(batch, state, decay)
    # The baseline uses past batches only: it is independent of the samples it is subtracted from.
    np.testing.assert_allclose(adv, batch - pg.moving_average_baseline(state), rtol=1e-6)
    state = new_state
    weights.append(float(jnp.mean(batch)))
    w = np.array([(1 - decay) * decay ** (k - j) for j in range(k + 1)])
    expected = np.sum(w * np.array(weights)) / w.sum()
    assert float(pg.moving_average_baseline(state)) == pytest.approx(expected, rel=1e-6)
  # After the first batch the bias-corrected baseline equals that batch's mean exactly.
  _, s1 = pg.moving_average_advantages(batches[0], pg.init_baseline_state(), decay)
  assert float(pg.moving_average_baseline(s1)) == pytest.approx(2.0)


def test_registered_estimators_broadcast_over_generated_tokens():
  T = 5
  lengths = jnp.array([5, 3, 1, 4, 2, 5, 5, 0])
  mask_BxT = (jnp.arange(T)[None] < lengths[:, None]).astype(jnp.float32)
  hp = pg.make_hparams()
  inputs = pg.AdvantageInputs(SCORES_B, mask_BxT, group_size=G)
  ref = loop_formulas(SCORES_B, G)
  for name, key in [("group_mean", "group_mean"), ("rloo", "rloo"), ("grpo", "grpo"),
                    ("grpo_population", "grpo_pop")]:
    out = pg.get_advantage(name)(inputs, hp, pg.init_baseline_state())
    np.testing.assert_allclose(out.advantages_BxT, ref[key][:, None] * mask_BxT, rtol=1e-5,
                               atol=1e-6, err_msg=name)
  out = pg.get_advantage("none")(inputs, hp, pg.init_baseline_state())
  np.testing.assert_allclose(out.advantages_BxT, SCORES_B[:, None] * mask_BxT)


def test_reinforce_pp_whitens_discounted_returns_over_the_batch():
  T = 6
  mask_BxT = (jnp.arange(T)[None] < jnp.array([[6], [4], [2], [5]])).astype(jnp.float32)
  scores_B = jnp.array([1.0, -1.0, 0.5, 2.0])
  kl_BxT = jax.random.uniform(jax.random.PRNGKey(0), (4, T))
  hp = pg.make_hparams(gamma=0.9, kl_coef=0.1)
  out = pg.get_advantage("reinforce_pp")(pg.AdvantageInputs(scores_B, mask_BxT, kl_BxT=kl_BxT),
                                         hp, pg.init_baseline_state())
  rewards = pg.per_token_rewards(scores_B, mask_BxT, kl_BxT, 0.1)
  returns = pg.discounted_returns(rewards, mask_BxT, 0.9)
  np.testing.assert_allclose(out.returns_BxT, returns, rtol=1e-6)
  np.testing.assert_allclose(out.advantages_BxT, pg.masked_whiten(returns, mask_BxT, eps=1e-6),
                             rtol=1e-5, atol=1e-6)
  sel = np.asarray(out.advantages_BxT)[np.asarray(mask_BxT) > 0]
  assert abs(sel.mean()) < 1e-5 and sel.std(ddof=1) == pytest.approx(1.0, rel=1e-4)


def test_value_estimator_is_gae_with_lambda_one():
  T = 6
  key1, key2 = jax.random.split(jax.random.PRNGKey(1))
  mask_BxT = (jnp.arange(T)[None] < jnp.array([[6], [4], [2], [5]])).astype(jnp.float32)
  values_BxT = jax.random.normal(key1, (4, T))
  inputs = pg.AdvantageInputs(jnp.array([1.0, -1.0, 0.5, 2.0]), mask_BxT, values_BxT,
                              kl_BxT=jax.random.uniform(key2, (4, T)))
  hp = pg.make_hparams(gamma=0.95, lam=1.0, kl_coef=0.05)
  state = pg.init_baseline_state()
  value = pg.get_advantage("value")(inputs, hp, state)
  gae = pg.get_advantage("gae")(inputs, hp, state)
  np.testing.assert_allclose(value.advantages_BxT, gae.advantages_BxT, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(value.returns_BxT, gae.returns_BxT, rtol=1e-5, atol=1e-5)
