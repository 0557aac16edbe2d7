"""The score-function estimator against exact gradients on an enumerable sequence space.

V = 3, T = 4: all 81 sequences are listed, J(θ) = Σ_y π_θ(y) r(y) and ∇J are exact by autodiff.
Sampled estimates are judged by a z-test on their measured standard error, with a Bonferroni
threshold over the D gradient components; the same test must reject a biased estimator. The
problem, its exact gradient and the sampled group estimates are the estimator lab's
(`pg.lab.problems`, `pg.lab.estimates`): these tests check the path the lab measures with.
"""

import itertools
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pg
from pg.core import tabular
from pg.lab import estimates, problems

V, T = 3, 4
PROBLEM = problems.default_problem(V, T)
SEQS_NxT, THETA, R_N = PROBLEM.seqs_NxT, PROBLEM.theta, PROBLEM.scores_N
EXACT_D = problems.exact_gradient(PROBLEM)
D = THETA.size
ALPHA = 1e-3  # family-wise false-alarm rate of each z-test


def z_crit(num_tests):
  return statistics.NormalDist().inv_cdf(1.0 - ALPHA / (2 * num_tests))


def max_abs_z(samples_NxD, target_D):
  """Largest |z| over the components that vary; the others (parameters no sequence reaches,
  e.g. θ[0, prev ≠ BOS]) must match the target exactly."""
  samples = np.asarray(samples_NxD, np.float64)
  target = np.asarray(target_D, np.float64)
  se_D = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
  varies = se_D > 0
  np.testing.assert_allclose(samples.mean(axis=0)[~varies], target[~varies], atol=1e-7)
  return float(np.max(np.abs((samples.mean(axis=0) - target)[varies] / se_D[varies])))


# Parameters that some sequence reaches: θ[0, BOS] and θ[t > 0, token]; Bonferroni counts them.
D_REACHABLE = V * V + (T - 1) * V * V


def sampled_group_grads(estimator, num_groups, group_size, seed, offset=0.0):
  """The lab's group estimates: per group of G samples, the mean of its rows' A_i ∇ log π(y_i)."""
  return estimates.group_estimates(PROBLEM, estimator, num_groups, group_size,
                                   jax.random.PRNGKey(seed), offset=offset)


def test_row_gradients_are_the_score_function_and_groups_average_them():
  # g_i = Σ_t A_{i,t} ∇θ log π(y_{i,t} | y_{i,<t}), against the Jacobian of the token log-probs.
  tokens_BxT = SEQS_NxT[::5][:16]
  adv_BxT = jax.random.normal(jax.random.PRNGKey(3), tokens_BxT.shape)
  logp_fn = lambda theta: pg.token_log_probs(tabular.logits(theta, tokens_BxT), tokens_BxT)
  jac_BxTxD = jax.jacobian(logp_fn)(THETA).reshape(*tokens_BxT.shape, D)
  g_BxD = estimates.row_gradients(THETA, tokens_BxT, adv_BxT)
  np.testing.assert_allclose(g_BxD, jnp.einsum("bt,btd->bd", adv_BxT, jac_BxTxD),
                             rtol=1e-5, atol=1e-6)
  groups_4xD = estimates.group_gradients(THETA, tokens_BxT, adv_BxT, group_size=4)
  np.testing.assert_allclose(groups_4xD, g_BxD.reshape(4, 4, D).mean(axis=1), rtol=1e-5,
                             atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("estimator,group_size", [("none", 1), ("rloo", 2), ("rloo", 4)])
def test_sampled_gradient_matches_exact(estimator, group_size):
  g_NxD = sampled_group_grads(estimator, 20_000, group_size, seed=1)
  assert max_abs_z(g_NxD, EXACT_D) < z_crit(D_REACHABLE)


@pytest.mark.slow
def test_z_test_rejects_a_biased_estimator():
  # Subtracting a group mean that includes the sample itself shrinks ∇J by (G−1)/G = ½ at G=2:
  # the same test, sample size and threshold must catch it, or the tests above prove nothing.
  g_NxD = sampled_group_grads("group_mean", 20_000, 2, seed=1)
  assert max_abs_z(g_NxD, EXACT_D) > z_crit(D_REACHABLE)
  assert max_abs_z(g_NxD, 0.5 * EXACT_D) < z_crit(D_REACHABLE)


def test_sequence_and_token_surrogates_agree():
  tokens_BxT = SEQS_NxT[::7]
  adv_B = problems.toy_reward(tokens_BxT) - 0.3
  mask_BxT = jnp.ones(tokens_BxT.shape, jnp.float32)

  def seq_level(theta):
    seq_logp_B = tabular.sequence_log_prob(theta, tokens_BxT)
    return jnp.mean(pg.reinforce_sequence_surrogate(seq_logp_B, adv_B))

  def token_level(theta):
    logp_BxT = pg.token_log_probs(tabular.logits(theta, tokens_BxT), tokens_BxT)
    loss_BxT = pg.reinforce_token_surrogate(logp_BxT, adv_B[:, None] * mask_BxT, mask_BxT)
    return pg.aggregate_loss(loss_BxT, mask_BxT, "seq-mean-token-sum")

  np.testing.assert_allclose(jax.grad(seq_level)(THETA), jax.grad(token_level)(THETA),
                             rtol=1e-5, atol=1e-7)


def test_exact_score_function_identity():
  # Σ_y π(y) r(y) ∇ log π(y) = ∇J exactly: the log-derivative trick itself.
  def surrogate(theta):
    logp_N = tabular.sequence_log_prob(theta, SEQS_NxT)
    return jnp.sum(jax.lax.stop_gradient(jnp.exp(logp_N)) * R_N * logp_N)
  np.testing.assert_allclose(jax.grad(surrogate)(THETA).reshape(-1), EXACT_D,
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("b", [1.0, -3.7, 25.0])
def test_constant_baseline_has_zero_expected_gradient(b):
  def baseline_term(theta):
    logp_N = tabular.sequence_log_prob(theta, SEQS_NxT)
    return jnp.sum(jax.lax.stop_gradient(jnp.exp(logp_N)) * b * logp_N)
  g = jax.grad(baseline_term)(THETA)
  # Zero up to float32 rounding of a sum of 81 terms of size |b|·|∇ log π| ≲ |b|·T.
  np.testing.assert_allclose(g, 0.0, atol=abs(b) * T * 81 * np.finfo(np.float32).eps)


def group_expectation_grad(advantage_fn, group_size):
  """E over every G-tuple of sequences of (1/G) Σ_i A_i ∇ log π(y_i), exactly."""
  tuples_MxG = jnp.asarray(list(itertools.product(range(SEQS_NxT.shape[0]), repeat=group_size)))
  adv_MxG = advantage_fn(R_N[tuples_MxG].reshape(-1), group_size).reshape(tuples_MxG.shape)

  def surrogate(theta):
    logp_N = tabular.sequence_log_prob(theta, SEQS_NxT)
    weight_M = jnp.exp(jnp.sum(jax.lax.stop_gradient(logp_N)[tuples_MxG], axis=1))
    return jnp.sum(weight_M[:, None] * adv_MxG * logp_N[tuples_MxG]) / group_size

  return jax.grad(surrogate)(THETA).reshape(-1)


@pytest.mark.parametrize("group_size", [2, 3])
def test_rloo_is_unbiased_by_enumeration(group_size):
  np.testing.assert_allclose(group_expectation_grad(pg.rloo_advantages, group_size),
                             EXACT_D, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("group_size", [2, 3])
def test_group_mean_including_self_is_biased_by_enumeration(group_size):
  np.testing.assert_allclose(group_expectation_grad(pg.group_mean_advantages, group_size),
                             (group_size - 1) / group_size * EXACT_D,
                             rtol=1e-4, atol=1e-6)


def exact_variance(adv_N):
  """Total variance E‖A ∇ log π − ∇J‖² of the one-sample estimator, by enumeration."""
  score_NxD = jax.jacobian(tabular.sequence_log_prob)(THETA, SEQS_NxT).reshape(-1, D)
  p_N = jnp.exp(tabular.sequence_log_prob(THETA, SEQS_NxT))
  g_NxD = adv_N[:, None] * score_NxD
  mean_D = jnp.sum(p_N[:, None] * g_NxD, axis=0)
  return float(jnp.sum(p_N * jnp.sum(jnp.square(g_NxD - mean_D), axis=1)))


def test_baseline_lowers_variance_exactly():
  # Scores offset by 5: without a baseline every sample pushes hard; with b = E[r] they do not.
  r_N = R_N + 5.0
  p_N = jnp.exp(tabular.sequence_log_prob(THETA, SEQS_NxT))
  mean_r = float(jnp.sum(p_N * r_N))
  var_none = exact_variance(r_N)
  var_mean = exact_variance(r_N - mean_r)
  assert var_mean < 0.1 * var_none, (var_mean, var_none)
  # Both estimators target the same gradient (the baseline adds no bias).
  np.testing.assert_allclose(
      jnp.sum(p_N[:, None] * (r_N - mean_r)[:, None]
              * jax.jacobian(tabular.sequence_log_prob)(THETA, SEQS_NxT).reshape(-1, D), 0),
      EXACT_D, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_rloo_lowers_sampled_variance():
  # Same problem, same number of samples per estimate (G = 4), scores offset by 5. The total
  # variances are compared with a margin far beyond their sampling error at N = 20 000.
  var = {}
  for name in ("none", "rloo"):
    g_NxD = np.asarray(sampled_group_grads(name, 20_000, 4, seed=2, offset=5.0), np.float64)
    var[name] = float(np.sum(g_NxD.var(axis=0, ddof=1)))
  assert var["rloo"] < 0.1 * var["none"], var
