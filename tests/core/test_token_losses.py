"""SAPO, CISPO, DPPO (binary TV and KL) and the truncated-IS policy gradient: one token at a
time, d loss / d log π against the closed forms, sign checks on both sides of each trust
region for positive and negative advantages, and SAPO's on-policy claim (REINFORCE at ρ = 1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pg


def token_grad(name, advantage, ratio, old_logp=-1.0, **hp):
  """(ℓ, dℓ/d log π) for one token with behaviour log-prob `old_logp` and ρ = `ratio`."""
  fn = pg.get_policy_loss(name)
  hps = pg.make_hparams(**hp)

  def loss(logp):
    out, _ = fn(pg.PolicyLossInputs(logp[None, None], jnp.full((1, 1), old_logp),
                                    jnp.full((1, 1), advantage), jnp.ones((1, 1))), hps)
    return out[0, 0]
  value, grad = jax.value_and_grad(loss)(jnp.float32(old_logp + np.log(ratio)))
  return float(value), float(grad)


# SAPO ---------------------------------------------------------------------------------------

def test_sapo_gate_has_value_2_over_tau_and_slope_1_at_ratio_1():
  for tau in (0.5, 1.0, 1.05, 3.0):
    value, slope = jax.value_and_grad(lambda r: pg.sapo_gate(r, tau))(1.0)
    assert float(value) == pytest.approx(2.0 / tau)
    assert float(slope) == pytest.approx(1.0)


@pytest.mark.parametrize("advantage", [2.0, -0.5])
def test_sapo_gradient_equals_reinforce_at_ratio_1(advantage):
  _, grad = token_grad("sapo", advantage, 1.0)
  assert grad == pytest.approx(-advantage, rel=1e-6)  # REINFORCE: d(−A log π)/d log π


@pytest.mark.parametrize("advantage,tau_name", [(1.0, "sapo_tau_pos"), (-1.0, "sapo_tau_neg")])
@pytest.mark.parametrize("ratio", [0.3, 0.8, 1.3, 2.5, 6.0])
def test_sapo_gradient_is_the_soft_gate_weight(advantage, tau_name, ratio):
  """dℓ/d log π = −4σ(1 − σ)·ρ·A with σ = σ(τ(ρ − 1)), τ by the advantage's sign."""
  tau = 1.7
  _, grad = token_grad("sapo", advantage, ratio, **{tau_name: tau})
  sig = 1.0 / (1.0 + np.exp(-tau * (ratio - 1.0)))
  assert grad == pytest.approx(-4 * sig * (1 - sig) * ratio * advantage, rel=1e-4)


def test_sapo_never_flips_the_gradient_and_decays_faster_for_negative_advantages():
  for ratio in (0.1, 0.5, 2.0, 10.0):
    assert token_grad("sapo", 1.0, ratio)[1] < 0 < token_grad("sapo", -1.0, ratio)[1]
  # Same ratio, τ_neg > τ_pos: the negative side's weight is smaller far from ρ = 1.
  pos, neg = -token_grad("sapo", 1.0, 4.0)[1], token_grad("sapo", -1.0, 4.0)[1]
  assert neg < pos


# CISPO and truncated IS ---------------------------------------------------------------------

@pytest.mark.parametrize("advantage", [1.0, -1.0])
@pytest.mark.parametrize("ratio", [0.1, 0.9, 1.0, 1.1, 1.5, 30.0])
def test_cispo_clips_the_weight_never_the_gradient(advantage, ratio):
  eps_low, eps_high = 0.3, 0.2
  _, grad = token_grad("cispo", advantage, ratio, cispo_eps_low=eps_low, cispo_eps_high=eps_high)
  assert grad == pytest.approx(-np.clip(ratio, 1 - eps_low, 1 + eps_high) * advantage, rel=1e-5)
  assert grad != 0  # unlike PPO, where the clipped side has no gradient


def test_cispo_default_has_no_lower_bound():
  _, grad = token_grad("cispo", 1.0, 0.05)
  assert grad == pytest.approx(-0.05, rel=1e-4)


@pytest.mark.parametrize("advantage", [1.0, -2.0])
@pytest.mark.parametrize("ratio", [0.2, 1.0, 1.9, 2.1, 50.0])
def test_truncated_is_gradient_is_min_ratio_cap_times_advantage(advantage, ratio):
  _, grad = token_grad("tis", advantage, ratio, tis_cap=2.0)
  assert grad == pytest.approx(-min(ratio, 2.0) * advantage, rel=1e-5)


# DPPO ---------------------------------------------------------------------------------------

def _p_ratio(p_old, p):
  return p / p_old, float(np.log(p_old))


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_dppo_tv_sign_checks_on_both_sides(advantage):
  """Binary TV, δ = 0.15: a token whose probability moved past δ in the advantage's direction
  loses its gradient; one that moved against it keeps PPO's gradient −A·ρ."""
  p_old = 0.5
  toward, against = (0.7, 0.3) if advantage > 0 else (0.3, 0.7)
  ratio, old = _p_ratio(p_old, toward)
  assert token_grad("dppo_tv", advantage, ratio, old)[1] == 0.0
  ratio, old = _p_ratio(p_old, against)
  assert token_grad("dppo_tv", advantage, ratio, old)[1] == pytest.approx(-advantage * ratio,
                                                                          rel=1e-5)
  ratio, old = _p_ratio(p_old, 0.6 if advantage > 0 else 0.4)  # inside: |Δp| = 0.1
  assert token_grad("dppo_tv", advantage, ratio, old)[1] == pytest.approx(-advantage * ratio,
                                                                          rel=1e-5)


def test_dppo_keeps_a_rare_tokens_gradient_where_ppo_clips_it():
  """The paper's example: 1e-5 → 1e-3 is a ratio of 100 (PPO clips it, no gradient) but a TV of
  about 1e-3 (DPPO keeps it, with the detached ratio truncated at C = 20)."""
  ratio, old = _p_ratio(1e-5, 1e-3)
  assert token_grad("ppo", 1.0, ratio, old)[1] == 0.0
  assert token_grad("dppo_tv", 1.0, ratio, old)[1] == pytest.approx(-20.0, rel=1e-4)
  assert token_grad("dppo_kl", 1.0, ratio, old)[1] == pytest.approx(-20.0, rel=1e-4)
  # ...and stops a likely token's large drop that PPO's ratio range allows (0.99 → 0.8: ρ 0.81).
  ratio, old = _p_ratio(0.99, 0.8)
  assert token_grad("ppo", -1.0, ratio, old, ppo_eps_low=0.2)[1] != 0.0
  assert token_grad("dppo_tv", -1.0, ratio, old)[1] == 0.0


def test_binary_kl_is_the_bernoulli_kl():
  p_old, p = 0.3, 0.45
  want = p_old * np.log(p_old / p) + (1 - p_old) * np.log((1 - p_old) / (1 - p))
  assert float(pg.binary_kl(jnp.float32(p), jnp.float32(p_old))) == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_dppo_kl_masks_only_moves_in_the_advantages_direction(advantage):
  p_old = 0.5
  far_up, far_down = 0.95, 0.05  # binary KL ≈ 0.83 > 0.05
  up_ratio, old = _p_ratio(p_old, far_up)
  down_ratio, _ = _p_ratio(p_old, far_down)
  g_up = token_grad("dppo_kl", advantage, up_ratio, old)[1]
  g_down = token_grad("dppo_kl", advantage, down_ratio, old)[1]
  if advantage > 0:   # moving up is the advantage's direction: masked; down: kept
    assert g_up == 0.0 and g_down == pytest.approx(-down_ratio, rel=1e-4)
  else:
    assert g_down == 0.0 and g_up == pytest.approx(min(up_ratio, 20.0), rel=1e-4)


def test_dppo_metrics_report_the_masked_fraction():
  logp = jnp.log(jnp.asarray([[0.7, 0.55, 0.5, 0.9]]))
  old = jnp.log(jnp.full((1, 4), 0.5))
  _, metrics = pg.get_policy_loss("dppo_tv")(
      pg.PolicyLossInputs(logp, old, jnp.ones((1, 4)), jnp.ones((1, 4))), pg.make_hparams())
  assert float(metrics["clip_fraction"]) == pytest.approx(0.5)  # 0.7 and 0.9 moved > 0.15


@pytest.mark.parametrize("field,value", [("sapo_tau_pos", 0.0), ("sapo_tau_neg", -1.0),
                                         ("cispo_eps_high", -0.1), ("dppo_tv_low", -0.01),
                                         ("dppo_kl_high", -1.0), ("dppo_ratio_cap", 0.0),
                                         ("tis_cap", 0.0)])
def test_bad_hyperparameters_are_refused_naming_the_field(field, value):
  with pytest.raises(ValueError, match=f"`{field}`"):
    pg.make_hparams(**{field: value})
