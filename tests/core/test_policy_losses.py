"""PPO's clipped surrogate, dual clip, value loss, entropy bonus and loss aggregation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pg


def ppo_grad(advantage, ratio, eps_low=0.2, eps_high=0.2, dual_clip=0.0):
  """(ℓ, dℓ/d log π) for one token with behaviour log-prob 0 and ρ = `ratio`."""
  def loss(logp):
    out, _ = pg.ppo_clipped_surrogate(logp[None, None], jnp.zeros((1, 1)),
                                      jnp.full((1, 1), advantage), jnp.ones((1, 1)),
                                      eps_low, eps_high, dual_clip)
    return out[0, 0]
  value, grad = jax.value_and_grad(loss)(jnp.log(jnp.float32(ratio)))
  return float(value), float(grad)


def test_conventions_sign_check_negative_advantage():
  # CONVENTIONS.md: A = −1, ε = 0.2: zero gradient at ρ = 0.5 (already pushed down past the
  # trust region), nonzero at ρ = 1.5 (must still be pushed down).
  assert ppo_grad(-1.0, 0.5)[1] == 0.0
  value, grad = ppo_grad(-1.0, 1.5)
  assert value == pytest.approx(1.5) and grad == pytest.approx(1.5)  # d(−Aρ)/d log π = −Aρ


def test_sign_check_positive_advantage():
  # A = +1: zero gradient at ρ = 1.5 (already pushed up past 1 + ε), nonzero at ρ = 0.5.
  assert ppo_grad(1.0, 1.5)[1] == 0.0
  value, grad = ppo_grad(1.0, 0.5)
  assert value == pytest.approx(-0.5) and grad == pytest.approx(-0.5)
  # Descending the loss raises log π for A > 0 and lowers it for A < 0 inside the range.
  assert ppo_grad(1.0, 1.0)[1] < 0 < ppo_grad(-1.0, 1.0)[1]


@pytest.mark.parametrize("advantage", [1.0, -1.0])
@pytest.mark.parametrize("ratio", [0.7, 0.85, 1.0, 1.15, 1.4])
def test_matches_the_definition(advantage, ratio):
  expected = max(-advantage * ratio, -advantage * np.clip(ratio, 0.8, 1.3))
  value, _ = ppo_grad(advantage, ratio, eps_low=0.2, eps_high=0.3)
  assert value == pytest.approx(expected, rel=1e-5)


def test_asymmetric_clip_range():
  # ρ = 1.25, A > 0: clipped when ε_high = 0.2, free when ε_high = 0.3 (clip-higher, DAPO).
  assert ppo_grad(1.0, 1.25, eps_high=0.2)[1] == 0.0
  assert ppo_grad(1.0, 1.25, eps_high=0.3)[1] == pytest.approx(-1.25)
  # ρ = 0.75, A < 0: clipped when ε_low = 0.2, free when ε_low = 0.3.
  assert ppo_grad(-1.0, 0.75, eps_low=0.2)[1] == 0.0
  assert ppo_grad(-1.0, 0.75, eps_low=0.3)[1] == pytest.approx(0.75)


@pytest.mark.parametrize("ratio", [3.5, 10.0, 1e3])
def test_dual_clip_bounds_the_loss_for_negative_advantages(ratio):
  c = 3.0
  plain, plain_grad = ppo_grad(-2.0, ratio)
  dual, dual_grad = ppo_grad(-2.0, ratio, dual_clip=c)
  assert plain == pytest.approx(2.0 * ratio, rel=1e-5) and plain_grad > 0
  assert dual == pytest.approx(c * 2.0) and dual_grad == 0.0


def test_dual_clip_leaves_the_rest_alone():
  for adv, ratio in [(-1.0, 2.0), (-1.0, 0.5), (1.0, 10.0), (1.0, 0.5)]:  # below c, or A > 0
    assert ppo_grad(adv, ratio, dual_clip=3.0) == ppo_grad(adv, ratio)


def test_clip_fraction_and_mask():
  logp = jnp.log(jnp.array([[0.5, 1.0, 1.5, 1.5]]))
  adv = jnp.array([[-1.0, 1.0, 1.0, -1.0]])
  mask = jnp.array([[1.0, 1.0, 1.0, 0.0]])
  loss, clipped = pg.ppo_clipped_surrogate(logp, jnp.zeros_like(logp), adv, mask)
  np.testing.assert_array_equal(clipped, [[1.0, 0.0, 1.0, 0.0]])
  assert float(loss[0, 3]) == 0.0


def test_huge_log_ratio_is_clamped_not_inf():
  loss, _ = pg.ppo_clipped_surrogate(jnp.array([[500.0]]), jnp.zeros((1, 1)),
                                     jnp.array([[-1.0]]), jnp.ones((1, 1)))
  assert np.isfinite(loss).all() and float(loss[0, 0]) == pytest.approx(np.exp(20.0), rel=1e-5)


def test_clipped_value_loss():
  v_old, target = 0.0, 1.0
  def value_loss(v):
    return pg.clipped_value_loss(jnp.array([[v]]), jnp.array([[v_old]]), jnp.array([[target]]),
                                 jnp.ones((1, 1)), clip=0.2)[0, 0]
  # Inside the range: ½(V − G)².
  assert float(value_loss(0.1)) == pytest.approx(0.5 * 0.81)
  # V moved past the clip towards the target: the clipped error (0.8²) is larger, so it wins and
  # the gradient stops (no credit for leaving the trust region).
  assert float(value_loss(0.5)) == pytest.approx(0.5 * 0.64)
  assert float(jax.grad(value_loss)(0.5)) == 0.0
  # V moved away from the target: the unclipped error dominates and still pulls it back.
  assert float(jax.grad(value_loss)(-0.5)) == pytest.approx(-1.5)


def test_entropy_bonus_gradient_raises_entropy():
  logits = jnp.array([[[2.0, 0.0, -1.0]]])
  def loss(x):
    return jnp.sum(pg.entropy_bonus(pg.token_entropy(x), jnp.ones((1, 1))))
  stepped = logits - 0.1 * jax.grad(loss)(logits)
  assert float(pg.token_entropy(stepped)[0, 0]) > float(pg.token_entropy(logits)[0, 0])


LOSS_BxT = jnp.array([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
MASK_BxT = jnp.array([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize("mode,expected", [
    ("token-mean", (1 + 2 + 3 + 10) / 4),
    ("seq-mean-token-mean", (6 / 3 + 10 / 1) / 2),
    ("seq-mean-token-sum", (6 + 10) / 2),
    ("seq-mean-token-sum-norm", (6 + 10) / 2 / 4),
])
def test_aggregation_modes(mode, expected):
  assert float(pg.aggregate_loss(LOSS_BxT, MASK_BxT, mode)) == pytest.approx(expected)


def test_aggregation_constant_normaliser_and_empty_rows():
  assert float(pg.aggregate_loss(LOSS_BxT, MASK_BxT, "seq-mean-token-sum-norm", 8.0)) == \
      pytest.approx(16 / 2 / 8)
  empty = jnp.zeros_like(MASK_BxT)
  for mode in pg.AGGREGATION_MODES:
    assert float(pg.aggregate_loss(LOSS_BxT, empty, mode)) == 0.0


def test_registered_losses_on_policy():
  # On-policy (ρ = 1) inside the clip range, PPO's gradient equals REINFORCE's.
  logp = jnp.log(jnp.array([[0.2, 0.5, 0.9], [0.4, 0.3, 0.6]]))
  adv = jnp.array([[1.0, -2.0, 0.5], [0.3, 0.0, -1.0]])
  mask = jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
  hp = pg.make_hparams()

  def total(name, lp):
    inputs = pg.PolicyLossInputs(lp, jax.lax.stop_gradient(lp), adv, mask)
    loss, _ = pg.get_policy_loss(name)(inputs, hp)
    return pg.aggregate_loss(loss, mask)

  np.testing.assert_allclose(jax.grad(lambda lp: total("ppo", lp))(logp),
                             jax.grad(lambda lp: total("reinforce", lp))(logp), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(lambda lp: total("reinforce", lp))(logp),
                             -adv * mask / mask.sum(), rtol=1e-6)


@pytest.mark.parametrize("name", ["reinforce", "ppo"])
def test_loss_metrics_stay_finite_for_huge_log_ratios(name):
  logp = jnp.array([[-500.0, 0.0, 300.0]])
  inputs = pg.PolicyLossInputs(logp, jnp.zeros_like(logp), jnp.ones_like(logp),
                               jnp.ones_like(logp))
  _, metrics = pg.get_policy_loss(name)(inputs, pg.make_hparams())
  assert all(np.isfinite(v) for v in metrics.values()), metrics
