"""GSPO (sequence and token forms) and GMPO: values by their definitions, gradients by
`jax.grad` against the closed forms, sign checks on both sides of each trust region, and the
on-policy claim GSPO = sequence-mean-token-mean REINFORCE at s = 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pg

B, T = 5, 7


def _inputs(seed=0, scale=0.3, per_token_adv=False):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, T + 1, size=B)
  mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
  old = (-rng.exponential(size=(B, T))).astype(np.float32)
  logp = (old + scale * rng.normal(size=(B, T))).astype(np.float32)
  adv = rng.normal(size=(B, 1 if not per_token_adv else T)).astype(np.float32)
  adv = np.broadcast_to(adv, (B, T)).copy() * mask
  return jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), jnp.asarray(mask)


def _loss(name, hp=None):
  fn = pg.get_policy_loss(name)
  agg = fn.aggregation
  hp = pg.make_hparams(**(hp or {}))

  def total(logp, old, adv, mask):
    loss_BxT, _ = fn(pg.PolicyLossInputs(logp, old, adv, mask), hp)
    return pg.aggregate_loss(loss_BxT, mask, agg)
  return total


def test_registered_with_sequence_mean_aggregation_and_their_own_clip_ranges():
  for name in ("gspo", "gspo_token", "gmpo"):
    assert pg.get_policy_loss(name).aggregation == "seq-mean-token-mean"
  hp = pg.make_hparams()
  assert float(hp["gspo_eps_low"]) == pytest.approx(3e-4)
  assert float(hp["gspo_eps_high"]) == pytest.approx(4e-4)
  assert float(hp["gmpo_eps_low"]) == pytest.approx(0.4)


@pytest.mark.parametrize("field,value", [("gspo_eps_low", -0.1), ("gspo_eps_high", -1.0),
                                         ("gmpo_eps_low", -0.2), ("gspo_eps_low", 1.0)])
def test_bad_clip_ranges_are_refused_naming_the_field(field, value):
  with pytest.raises(ValueError, match=f"`{field}`"):
    pg.make_hparams(**{field: value})


def test_gspo_value_is_the_clipped_sequence_ratio_objective():
  logp, old, adv, mask = _inputs(1)
  eps_low, eps_high = 0.05, 0.08
  got = _loss("gspo", {"gspo_eps_low": eps_low, "gspo_eps_high": eps_high})(logp, old, adv, mask)
  m = np.asarray(mask)
  n = m.sum(1)
  s = np.exp(((np.asarray(logp) - np.asarray(old)) * m).sum(1) / n)
  a = (np.asarray(adv) * m).sum(1) / n
  want = np.mean(np.maximum(-a * s, -a * np.clip(s, 1 - eps_low, 1 + eps_high)))
  assert float(got) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("eps", [(3e-4, 4e-4), (0.05, 0.05), (0.5, 0.5)])
def test_gspo_token_equals_gspo_with_one_advantage_per_response(seed, eps):
  """Value and gradient, with sequences inside and outside the clip range."""
  logp, old, adv, mask = _inputs(seed)
  hp = {"gspo_eps_low": eps[0], "gspo_eps_high": eps[1]}
  v1, g1 = jax.value_and_grad(_loss("gspo", hp))(logp, old, adv, mask)
  v2, g2 = jax.value_and_grad(_loss("gspo_token", hp))(logp, old, adv, mask)
  np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-7)


def test_gspo_gradient_at_s_equal_1_is_sequence_mean_token_mean_reinforce():
  logp, _, adv, mask = _inputs(3)
  grad = jax.grad(_loss("gspo"))(logp, logp, adv, mask)
  reinforce = lambda lp: pg.aggregate_loss(pg.reinforce_token_surrogate(lp, adv, mask), mask,
                                           "seq-mean-token-mean")
  np.testing.assert_allclose(grad, jax.grad(reinforce)(logp), rtol=1e-5, atol=1e-7)


def test_gspo_token_gradient_with_per_token_advantages():
  """∇ℓ = −(1/B) Σ_b (1/|y_b|) Σ_t s_b A_bt ∇log π_bt where unclipped."""
  logp, old, adv, mask = _inputs(4, scale=0.01, per_token_adv=True)
  hp = {"gspo_eps_low": 0.5, "gspo_eps_high": 0.5}  # nothing clipped
  grad = jax.grad(_loss("gspo_token", hp))(logp, old, adv, mask)
  m = np.asarray(mask)
  n = m.sum(1, keepdims=True)
  s = np.exp(((np.asarray(logp) - np.asarray(old)) * m).sum(1, keepdims=True) / n)
  want = -s * np.asarray(adv) * m / n / B
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-7)


def _one_sequence_grad(name, advantage, log_s, hp):
  """d loss / d log π of a 3-token response whose sequence log-ratio mean is `log_s`."""
  mask = jnp.ones((1, 3))
  old = jnp.full((1, 3), -1.0)
  adv = jnp.full((1, 3), advantage)
  return jax.grad(_loss(name, hp))(old + log_s, old, adv, mask)


@pytest.mark.parametrize("name", ["gspo", "gspo_token"])
def test_gspo_sign_checks_on_both_sides_of_the_clip_range(name):
  hp = {"gspo_eps_low": 0.1, "gspo_eps_high": 0.1}
  # A > 0: past 1 + ε the gradient vanishes; below 1 − ε it still pushes log π up.
  assert np.all(_one_sequence_grad(name, 1.0, np.log(1.2), hp) == 0)
  assert np.all(_one_sequence_grad(name, 1.0, np.log(0.8), hp) < 0)
  # A < 0: below 1 − ε the gradient vanishes; above 1 + ε it still pushes log π down.
  assert np.all(_one_sequence_grad(name, -1.0, np.log(0.8), hp) == 0)
  assert np.all(_one_sequence_grad(name, -1.0, np.log(1.2), hp) > 0)


def test_gmpo_value_and_on_policy_gradient():
  logp, old, adv, mask = _inputs(5, scale=0.05)
  m = np.asarray(mask)
  n = m.sum(1)
  a = (np.asarray(adv) * m).sum(1) / n
  r = np.exp(((np.asarray(logp) - np.asarray(old)) * m).sum(1) / n)  # all within ±0.4
  assert float(_loss("gmpo")(logp, old, adv, mask)) == pytest.approx(np.mean(-a * r), rel=1e-5)
  grad = jax.grad(_loss("gmpo"))(logp, logp, adv, mask)
  reinforce = lambda lp: pg.aggregate_loss(pg.reinforce_token_surrogate(lp, adv, mask), mask,
                                           "seq-mean-token-mean")
  np.testing.assert_allclose(grad, jax.grad(reinforce)(logp), rtol=1e-5, atol=1e-7)


def test_gmpo_clips_each_token_in_log_space_on_the_advantages_side():
  hp = {"gmpo_eps_low": 0.2, "gmpo_eps_high": 0.3}
  old = jnp.full((1, 3), -1.0)
  mask = jnp.ones((1, 3))
  delta = jnp.asarray([[0.5, 0.1, -0.5]])  # above ε_high, inside, below −ε_low
  for advantage, frozen in ((1.0, [True, False, False]), (-1.0, [False, False, True])):
    g = np.asarray(jax.grad(_loss("gmpo", hp))(old + delta, old,
                                               jnp.full((1, 3), advantage), mask))[0]
    np.testing.assert_array_equal(g == 0, frozen)
    assert np.all(np.sign(g[~np.asarray(frozen)]) == -np.sign(advantage))
  _, metrics = pg.get_policy_loss("gmpo")(
      pg.PolicyLossInputs(old + delta, old, jnp.ones((1, 3)), mask), pg.make_hparams(**hp))
  assert float(metrics["clip_fraction"]) == pytest.approx(1 / 3)


def test_rows_without_tokens_give_zero_loss_and_gradient():
  logp, old, adv, mask = _inputs(6)
  mask = mask.at[2].set(0.0)
  for name in ("gspo", "gspo_token", "gmpo"):
    loss_BxT, _ = pg.get_policy_loss(name)(pg.PolicyLossInputs(logp, old, adv, mask),
                                           pg.make_hparams())
    assert np.all(np.asarray(loss_BxT)[2] == 0)
    assert np.all(np.asarray(jax.grad(_loss(name))(logp, old, adv, mask))[2] == 0)
