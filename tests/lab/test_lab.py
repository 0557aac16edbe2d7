"""The estimator lab's claims 1 and 2, fast, and its claims 3 and 4 in brief: unbiased estimators
pass and biased ones fail a Bonferroni z-test against the exact gradient, baselines cut the
variance and raise the SNR, sequence-level advantages put variance where ∇J = 0, λ trades bias
against variance. Every threshold is a multiple of a standard error from the sample size (the
jackknife of `pg.lab.statistics`), not a loose constant."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pg
from pg.core import tabular
from pg.lab import estimates, problems
from pg.lab.statistics import (Moments, credit_statistics, jackknife, statistics_of,
                               variance_by_step, variance_ratio)

N, G = 4000, 4
Z = 4.0  # standard errors a difference must exceed
PROBLEM = problems.default_problem()
EXACT = problems.exact_gradient(PROBLEM)
UNBIASED = ("none", "moving_average", "rloo", "value", "gae")
BIASED = ("group_mean", "grpo", "grpo_population", "reinforce_pp")
BASELINES = ("moving_average", "rloo", "value", "gae")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def stats():
  out = {}
  for i, name in enumerate(UNBIASED + BIASED):
    for offset in (0.0, 5.0):  # the same samples for both: a paired comparison
      g = estimates.group_estimates(PROBLEM, name, N, G, jax.random.PRNGKey(i), offset=offset)
      out[(name, offset)] = statistics_of(g, EXACT)
  return out


def test_the_lab_measures_every_registered_estimator_and_gives_a_critic_to_those_needing_one():
  assert set(UNBIASED + BIASED) <= set(estimates.estimator_names())
  assert [n for n in UNBIASED + BIASED if estimates.needs_values(n)] == ["value", "gae"]

  @pg.register_advantage("lab_test_fork")
  def fork(inputs, hp, state):  # a fork's estimator that needs a critic: A_t = R − V(s_0)
    if inputs.values_BxT is None:
      raise ValueError("needs values")
    adv_BxT = (inputs.scores_B - inputs.values_BxT[:, 0])[:, None] * inputs.mask_BxT
    return pg.AdvantageOutputs(adv_BxT, adv_BxT, state)
  try:
    assert estimates.estimator_names()[-1] == "lab_test_fork"
    assert estimates.needs_values("lab_test_fork")
    g = estimates.group_estimates(PROBLEM, "lab_test_fork", 400, G, jax.random.PRNGKey(0))
    assert not statistics_of(g, EXACT).biased  # V(s_0) = J is a constant baseline
  finally:
    del pg.ADVANTAGE_ESTIMATORS["lab_test_fork"]


def test_the_jackknife_of_a_mean_is_the_batch_means_standard_error():
  x_N = np.random.default_rng(0).normal(size=2000)
  est = jackknife(lambda s: s.mean_D[0], Moments.of(x_N, 20))
  means_K = x_N.reshape(20, -1).mean(axis=1)
  assert est.value == pytest.approx(x_N.mean())
  assert est.se == pytest.approx(means_K.std(ddof=1) / np.sqrt(20))


@pytest.mark.parametrize("name", UNBIASED)
def test_unbiased_estimators_pass_the_z_test(stats, name):
  s = stats[(name, 0.0)]
  assert not s.biased, (s.max_abs_z, s.z_threshold)
  assert abs(s.scale.value - 1.0) < Z * s.scale.se


@pytest.mark.parametrize("name", BIASED)
def test_biased_estimators_fail_it(stats, name):
  assert stats[(name, 0.0)].biased


def test_group_mean_including_the_sample_scales_the_gradient_by_g_minus_1_over_g(stats):
  s = stats[("group_mean", 0.0)]
  assert abs(s.scale.value - (G - 1) / G) < Z * s.scale.se


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_cut_the_variance_at_an_equal_budget(stats, name):
  ratio = variance_ratio(stats[("none", 0.0)], stats[(name, 0.0)])
  assert ratio.value - 1.0 > Z * ratio.se, ratio


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_raise_the_signal_to_noise_ratio_at_an_equal_budget(stats, name):
  none, s = stats[("none", 0.0)].snr, stats[(name, 0.0)].snr
  assert s.value - none.value > Z * np.hypot(s.se, none.se), (s, none)


def test_a_score_shift_grows_the_variance_only_without_a_baseline(stats):
  none, shifted = stats[("none", 0.0)].variance, stats[("none", 5.0)].variance
  assert shifted.value - none.value > Z * np.hypot(none.se, shifted.se)
  for name in ("rloo", "value"):  # the shift cancels exactly in r − b (same samples)
    np.testing.assert_allclose(stats[(name, 5.0)].variance.value,
                               stats[(name, 0.0)].variance.value, rtol=1e-3)


def test_exact_values_are_conditional_expectations():
  p = PROBLEM
  v_NxT = problems.exact_values(p)
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


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_a_learned_critic_converges_to_the_exact_values():
  p = PROBLEM
  errors = [problems.critic_error(p, problems.learned_values(p, m, jax.random.PRNGKey(1)))
            for m in (64, 4096, 262144)]
  assert errors[0] > errors[1] > errors[2]
  assert errors[2] < 0.01  # about 1/√(visits per state), the smallest state seen ~10³ times


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_credit_assignment_per_token_critic_leaves_irrelevant_tokens_alone():
  p = problems.needle_problem()
  exact = np.asarray(problems.exact_gradient(p)).reshape(p.length, -1)
  assert np.abs(exact[2:]).max() < 1e-7 < np.abs(exact[1]).max()  # float32 rounding only
  n = 2000
  g_seq = estimates.group_estimates(p, "rloo", n, G, jax.random.PRNGKey(0))
  g_tok = estimates.group_estimates(p, "gae", n, G, jax.random.PRNGKey(0))
  assert estimates.constant_over_tokens(p, "rloo", jax.random.PRNGKey(0))
  assert not estimates.constant_over_tokens(p, "gae", jax.random.PRNGKey(0))
  seq = credit_statistics(g_seq, p.length, 2)
  assert seq.share.value - 0.5 > Z * seq.share.se  # most of RLOO's variance: irrelevant tokens
  np.testing.assert_allclose(variance_by_step(g_tok, p.length)[2:], 0.0, atol=1e-10)  # exact V
  learned = problems.learned_values(p, 1024, jax.random.PRNGKey(1))
  tok = credit_statistics(
      estimates.group_estimates(p, "gae", n, G, jax.random.PRNGKey(2), values_NxT=learned),
      p.length, 2)
  assert seq.share.value - tok.share.value > Z * np.hypot(seq.share.se, tok.share.se)
  assert tok.irrelevant.value > 0  # the learned critic is not exact


def test_lambda_trades_bias_for_variance_with_a_noisy_critic():
  p = PROBLEM
  e0 = estimates.gae_advantage_error(p, 0.0, 0.3, 8000, jax.random.PRNGKey(0))
  e1 = estimates.gae_advantage_error(p, 1.0, 0.3, 8000, jax.random.PRNGKey(1))
  assert e1.variance.value - e0.variance.value > Z * np.hypot(e0.variance.se, e1.variance.se)
  assert e0.bias2.value - e1.bias2.value > Z * np.hypot(e0.bias2.se, e1.bias2.se)
  # the gradient: λ = 1 stays unbiased with a noisy critic, λ = 0 does not
  s1, s0 = (statistics_of(estimates.group_estimates(p, "gae", N, G, jax.random.PRNGKey(1),
                                                    hp=pg.make_hparams(lam=lam), value_noise=0.3),
                          EXACT) for lam in (1.0, 0.0))
  assert not s1.biased and s0.biased


def _main_table(text, after):
  body = text[text.index(after):]
  return re.search(r"(\| estimator \|.*?)\n\n", body, re.S).group(1)


def test_the_readme_shows_the_reports_main_table():
  report = open(os.path.join(ROOT, "reports", "estimator_lab", "report.md"),
                encoding="utf-8").read()
  readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  assert _main_table(readme, "## The estimator lab") == _main_table(report, "## Main table")
