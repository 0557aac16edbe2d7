"""The KL gradient facts of CONVENTIONS.md, checked by exact enumeration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pg
from pg.core import tabular

V = 5
THETA_V = jax.random.normal(jax.random.PRNGKey(0), (V,))
REF_V = jax.random.normal(jax.random.PRNGKey(1), (V,))
ALL_1xV = jnp.arange(V)[None, :]  # each token once, as a batch of one "sequence" of length V


def logp_theta(theta_V):
  return jax.nn.log_softmax(theta_V)[None, :]  # [1, V]: log π(y) for every y


def expected_estimator_grad(kl_fn):
  """E_{y∼π_θ}[∇θ k(y)], the sample y held fixed: Σ_y sg(π(y)) ∇k(log π_θ(y), log π_ref(y))."""
  ref_1xV = jax.nn.log_softmax(REF_V)[None, :]

  def surrogate(theta_V):
    lp = logp_theta(theta_V)
    return jnp.sum(jax.lax.stop_gradient(jnp.exp(lp)) * kl_fn(lp, ref_1xV))
  return jax.grad(surrogate)(THETA_V)


def kl(p_logits, q_logits):
  lp, lq = jax.nn.log_softmax(p_logits), jax.nn.log_softmax(q_logits)
  return jnp.sum(jnp.exp(lp) * (lp - lq))


def test_k1_gradient_is_zero_in_expectation():
  np.testing.assert_allclose(expected_estimator_grad(pg.kl_k1), 0.0, atol=1e-6)


def test_k2_gradient_is_forward_kl_gradient():
  np.testing.assert_allclose(expected_estimator_grad(pg.kl_k2),
                             jax.grad(lambda t: kl(t, REF_V))(THETA_V), rtol=1e-5, atol=1e-6)


def test_k3_gradient_is_reverse_kl_gradient():
  g3 = expected_estimator_grad(pg.kl_k3)
  np.testing.assert_allclose(g3, jax.grad(lambda t: kl(REF_V, t))(THETA_V), rtol=1e-5, atol=1e-6)
  # ...and not the forward one: the two differ on this pair of distributions.
  assert np.abs(g3 - jax.grad(lambda t: kl(t, REF_V))(THETA_V)).max() > 1e-2


def test_estimator_values():
  lp = logp_theta(THETA_V)
  ref = jax.nn.log_softmax(REF_V)[None, :]
  p = jnp.exp(lp)
  true_kl = float(kl(THETA_V, REF_V))
  assert float(jnp.sum(p * pg.kl_k1(lp, ref))) == pytest.approx(true_kl, rel=1e-5)  # unbiased
  assert float(jnp.sum(p * pg.kl_k3(lp, ref))) == pytest.approx(true_kl, rel=1e-5)  # unbiased
  assert np.all(pg.kl_k2(lp, ref) >= 0) and np.all(pg.kl_k3(lp, ref) >= 0)
  assert np.any(pg.kl_k1(lp, ref) < 0)  # k1 is negative on some samples


def test_log_ratio_clamped_before_exp():
  big = jnp.array([[1e4, -1e4]])
  for fn in (pg.kl_k1, pg.kl_k2, pg.kl_k3):
    out = fn(big, jnp.zeros_like(big))
    assert np.all(np.isfinite(out)), fn.__name__
  np.testing.assert_allclose(pg.kl_k1(big, jnp.zeros_like(big)), [[20.0, -20.0]])


# Whole sequences: a tabular policy over V=3, T=3 and a reference of the same form.
SV, ST = 3, 3
SEQS = tabular.all_sequences(SV, ST)
THETA = tabular.init_params(jax.random.PRNGKey(2), SV, ST)
REF = tabular.init_params(jax.random.PRNGKey(3), SV, ST)
R_N = (SEQS[:, 1] == 2).astype(jnp.float32) + 0.5 * (SEQS[:, 2] == SEQS[:, 0])
MASK = jnp.ones(SEQS.shape, jnp.float32)


def token_logp(theta, seqs=SEQS):
  return pg.token_log_probs(tabular.logits(theta, seqs), seqs)


def seq_kl(theta):
  logp_N = tabular.sequence_log_prob(theta, SEQS)
  return jnp.sum(jnp.exp(logp_N) * (logp_N - tabular.sequence_log_prob(REF, SEQS)))


def expectation_of_grad(per_sequence_objective):
  """Σ_y sg(π(y)) ∇ f(y): the expected gradient of a per-sample objective, exactly."""
  def surrogate(theta):
    p_N = jax.lax.stop_gradient(jnp.exp(tabular.sequence_log_prob(theta, SEQS)))
    return jnp.sum(p_N * per_sequence_objective(theta))
  return jax.grad(surrogate)(THETA)


def test_per_token_k2_in_the_loss_misses_the_sequence_cross_terms():
  g_k2 = expectation_of_grad(
      lambda th: jnp.sum(pg.kl_k2(token_logp(th), token_logp(REF)), axis=1))
  g_true = jax.grad(seq_kl)(THETA)
  # Exact per token, but the sequence gradient also has Δ_t ∇ log π(y_s|y_<s), s < t.
  assert np.abs(g_k2 - g_true).max() > 0.05 * np.abs(g_true).max()


@pytest.mark.parametrize("estimator", ["none", "value"])
def test_k1_in_the_reward_gives_the_exact_regularised_gradient(estimator):
  """E[∇(−ℓ)] = ∇(J − β KL(π_θ ‖ π_ref)) exactly, through a registry estimator (k1 as a
  per-token reward, return-to-go; "value" with V = 0) and the per-token REINFORCE surrogate."""
  beta = 0.3
  hp = pg.make_hparams(kl_coef=beta, gamma=1.0)
  kl_NxT = pg.kl_k1(token_logp(THETA), token_logp(REF))
  inputs = pg.AdvantageInputs(R_N, MASK, values_BxT=jnp.zeros_like(MASK), kl_BxT=kl_NxT)
  adv_NxT = pg.get_advantage(estimator)(inputs, hp, pg.init_baseline_state()).advantages_BxT
  g = expectation_of_grad(
      lambda th: -jnp.sum(pg.reinforce_token_surrogate(token_logp(th), adv_NxT, MASK), axis=1))
  g_true = jax.grad(lambda th: tabular.exact_expectation(th, SEQS, R_N) - beta * seq_kl(th))(THETA)
  np.testing.assert_allclose(g, g_true, rtol=1e-4, atol=1e-6)
