"""The estimator lab's claims 1 and 2, fast: unbiased estimators pass and biased ones fail a
Bonferroni z-test against the exact gradient, and baselines cut the variance, with thresholds
from the sample size (standard errors), not loose constants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pg import lab, tabular

N, G = 4000, 4
PROBLEM = lab.default_problem()
EXACT = lab.exact_gradient(PROBLEM)
UNBIASED = ("none", "moving_average", "rloo", "value", "gae")
BIASED = ("group_mean", "grpo", "reinforce_pp")


@pytest.fixture(scope="module")
def stats():
  out = {}
  for i, name in enumerate(UNBIASED + BIASED):
    for offset in (0.0, 5.0):
      g = lab.group_estimates(PROBLEM, name, N, G, jax.random.PRNGKey(i), offset=offset)
      out[(name, offset)] = lab.statistics_of(g, EXACT)
  return out


@pytest.mark.parametrize("name", UNBIASED)
def test_unbiased_estimators_pass_the_z_test(stats, name):
  s = stats[(name, 0.0)]
  assert not s.biased, (s.max_abs_z, s.z_threshold)
  assert abs(s.scale - 1.0) < 4 * s.scale_se


@pytest.mark.parametrize("name", BIASED)
def test_biased_estimators_fail_it(stats, name):
  assert stats[(name, 0.0)].biased


def test_group_mean_including_the_sample_scales_the_gradient_by_g_minus_1_over_g(stats):
  s = stats[("group_mean", 0.0)]
  assert abs(s.scale - (G - 1) / G) < 4 * s.scale_se


@pytest.mark.parametrize("name", ("moving_average", "rloo", "value", "gae"))
def test_baselines_cut_the_variance_at_an_equal_budget(stats, name):
  none, s = stats[("none", 0.0)], stats[(name, 0.0)]
  gap_se = np.hypot(none.variance_se, s.variance_se)
  assert none.variance - s.variance > 4 * gap_se


def test_a_score_shift_grows_the_variance_only_without_a_baseline(stats):
  none, shifted = stats[("none", 0.0)], stats[("none", 5.0)]
  assert shifted.variance - none.variance > 4 * np.hypot(none.variance_se, shifted.variance_se)
  for name in ("rloo", "value"):  # the shift cancels exactly in r − b (same samples)
    np.testing.assert_allclose(stats[(name, 5.0)].variance, stats[(name, 0.0)].variance,
                               rtol=1e-3)


def test_exact_values_are_conditional_expectations():
  p = PROBLEM
  v_NxT = lab.exact_values(p)
  J = tabular.exact_expectation(p.theta, p.seqs_NxT, p.scores_N)
  np.testing.assert_allclose(v_NxT[:, 0], J, rtol=1e-5)
  # V(y_<t) = Σ_{y_t} π(y_t | y_<t) V(y_<t+1): the values are a martingale along each sequence.
  logits = tabular.logits(p.theta, p.seqs_NxT)
  probs = jax.nn.softmax(logits, axis=-1)
  V = p.vocab_size
  for t in range(p.length - 1):
    nxt = {}
    for row in range(p.seqs_NxT.shape[0]):
      nxt[tuple(np.asarray(p.seqs_NxT[row, :t + 1]))] = float(v_NxT[row, t + 1])
    for row in range(0, p.seqs_NxT.shape[0], 7):
      prefix = tuple(np.asarray(p.seqs_NxT[row, :t]))
      expected = sum(float(probs[row, t, y]) * nxt[prefix + (y,)] for y in range(V))
      assert float(v_NxT[row, t]) == pytest.approx(expected, rel=1e-5)
  # the last position: V(y_<T) = E over the last token of r
  last = jnp.einsum("nv,nv->n", probs[:, -1],
                    p.scores_N.reshape(-1, V)[jnp.arange(p.seqs_NxT.shape[0]) // V])
  np.testing.assert_allclose(v_NxT[:, -1], last, rtol=1e-5)


def test_credit_assignment_per_token_critic_leaves_irrelevant_tokens_alone():
  p = lab.needle_problem()
  exact = np.asarray(lab.exact_gradient(p)).reshape(p.length, -1)
  assert np.abs(exact[2:]).max() < 1e-7 < np.abs(exact[1]).max()  # float32 rounding only
  seq = lab.variance_by_step(lab.group_estimates(p, "rloo", 2000, G, jax.random.PRNGKey(0)), p)
  tok = lab.variance_by_step(lab.group_estimates(p, "gae", 2000, G, jax.random.PRNGKey(0)), p)
  assert seq[2:].sum() > 0.5 * seq.sum()  # most of RLOO's variance sits on irrelevant tokens
  np.testing.assert_allclose(tok[2:], 0.0, atol=1e-10)  # exact V: none there


def test_lambda_trades_bias_for_variance_with_a_noisy_critic():
  p = PROBLEM
  bias0, var0 = lab.gae_advantage_error(p, 0.0, 0.3, 8000, jax.random.PRNGKey(0))
  bias1, var1 = lab.gae_advantage_error(p, 1.0, 0.3, 8000, jax.random.PRNGKey(0))
  assert var0 < 1e-10 < var1 and bias0 > bias1
  # the gradient: λ = 1 stays unbiased with a noisy critic, λ = 0 does not
  hp = lambda lam: __import__("pg").make_hparams(lam=lam)
  s1 = lab.statistics_of(lab.group_estimates(p, "gae", N, G, jax.random.PRNGKey(1), hp=hp(1.0),
                                             value_noise=0.3), EXACT)
  s0 = lab.statistics_of(lab.group_estimates(p, "gae", N, G, jax.random.PRNGKey(1), hp=hp(0.0),
                                             value_noise=0.3), EXACT)
  assert not s1.biased and s0.biased
