"""The held-out estimators of pg.core.evaluation: pass@k by exact enumeration, its unbiasedness,
maj@k's voting rules, the Student-t interval, and the summary a run reports."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from pg.core.evaluation import majority_correct, mean_and_half_width, pass_at_k, pass_ks, summarize


def brute_pass_at_k(n, c, k):
  """The fraction of k-subsets of n samples (the first c correct) that contain a correct one."""
  subsets = list(itertools.combinations(range(n), k))
  return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration_over_subsets():
  """pass@k is the chance that k of the n samples, drawn without replacement, hold a correct one."""
  for n in range(1, 8):
    for c in range(n + 1):
      for k in range(1, n + 1):
        got = pass_at_k(n, c, k)
        assert isinstance(got, float)
        assert got == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_vectorised_matches_scalar_calls():
  """An array of problems gives, element by element, what one call per problem gives."""
  n_E = np.array([7, 7, 5, 4, 6, 3, 7])
  c_E = np.array([0, 3, 5, 1, 2, 3, 7])
  for k in (1, 2, 3):
    got = pass_at_k(n_E, c_E, k)
    assert got.shape == (7,) and got.dtype == np.float64
    np.testing.assert_allclose(got, [pass_at_k(int(n), int(c), k) for n, c in zip(n_E, c_E)],
                               rtol=0, atol=1e-15)
  # a scalar n broadcasts against an array of counts
  np.testing.assert_allclose(pass_at_k(5, np.arange(6), 2),
                             [pass_at_k(5, c, 2) for c in range(6)], atol=1e-15)


def test_pass_at_1_is_fraction_correct():
  for n in range(1, 10):
    for c in range(n + 1):
      assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)


def test_pass_at_k_monotone_in_k_and_c():
  """More draws or more correct samples never lower pass@k."""
  for n in range(1, 8):
    for c in range(n + 1):
      by_k = [pass_at_k(n, c, k) for k in range(1, n + 1)]
      assert all(b >= a - 1e-12 for a, b in zip(by_k, by_k[1:])), (n, c, by_k)
    for k in range(1, n + 1):
      by_c = [pass_at_k(n, c, k) for c in range(n + 1)]
      assert all(b >= a - 1e-12 for a, b in zip(by_c, by_c[1:])), (n, k, by_c)
      assert by_c[0] == 0.0 and by_c[-1] == 1.0


@pytest.mark.parametrize("n, c, k", [
    (3, 1, 4),       # k > n
    (3, 1, 0),       # k < 1
    (3, 1, -1),
    (3, 4, 1),       # c > n
    (3, -1, 1),      # c < 0
    (3, 1, 1.5),     # k not an int
])
def test_pass_at_k_refuses_bad_arguments(n, c, k):
  with pytest.raises(ValueError, match="pass_at_k"):
    pass_at_k(n, c, k)


def test_pass_at_k_refuses_one_bad_problem_in_an_array():
  with pytest.raises(ValueError):
    pass_at_k(np.array([4, 2, 4]), np.array([1, 1, 1]), 3)  # the second has n < k
  with pytest.raises(ValueError):
    pass_at_k(np.array([4, 4]), np.array([1, 5]), 1)  # the second has c > n


@pytest.mark.parametrize("n, p, k", [(10, 0.3, 1), (10, 0.3, 4), (8, 0.1, 8), (16, 0.05, 5)])
def test_pass_at_k_is_unbiased(n, p, k):
  """With per-sample success p, E[pass@k(n, Binomial(n, p), k)] = 1 − (1 − p)^k; the sample mean
  of many draws lies within 5 standard errors of it."""
  rng = np.random.default_rng(1234)
  draws = 20_000
  estimates = pass_at_k(np.full(draws, n), rng.binomial(n, p, size=draws), k)
  truth = 1 - (1 - p) ** k
  se = estimates.std(ddof=1) / math.sqrt(draws)
  assert se > 0
  assert abs(estimates.mean() - truth) < 5 * se, (estimates.mean(), truth, se)


def test_majority_clear_majority():
  assert majority_correct(["7", "7", "3"], [True, True, False]) == 1.0
  assert majority_correct(["3", "7", "3"], [False, True, False]) == 0.0


def test_majority_tie_goes_to_first_seen_answer():
  assert majority_correct(["a", "b", "b", "a"], [False, True, True, False]) == 0.0
  assert majority_correct(["b", "a", "a", "b"], [True, False, False, True]) == 1.0


def test_majority_ignores_missing_answers():
  """A sample with no answer casts no vote, however many there are."""
  assert majority_correct([None, None, None, "5"], [False, False, False, True]) == 1.0
  assert majority_correct([None, "5", None, "6", "6"], [False, True, False, False, False]) == 0.0
  assert majority_correct([None, None], [False, False]) == 0.0
  assert majority_correct([], []) == 0.0


def test_majority_length_mismatch_raises():
  with pytest.raises(ValueError):
    majority_correct(["a", "b"], [True])


@pytest.mark.parametrize("x", [[0.0, 1.0], [1.0, 0.0, 1.0, 1.0], [0.2, 0.5, 0.9, 0.1, 0.3, 0.7],
                               list(np.linspace(-3, 5, 17))])
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_half_width_matches_scipy_t_interval(x, confidence):
  mean, half = mean_and_half_width(x, confidence)
  sem = np.std(x, ddof=1) / np.sqrt(len(x))
  lo, hi = stats.t.interval(confidence, len(x) - 1, loc=np.mean(x), scale=sem)
  assert mean == pytest.approx(np.mean(x))
  assert half == pytest.approx((hi - lo) / 2, rel=1e-10)
  assert mean - half == pytest.approx(lo) and mean + half == pytest.approx(hi)


def test_half_width_one_and_zero_problems():
  assert mean_and_half_width([0.25]) == (0.25, 0.0)
  mean, half = mean_and_half_width([])
  assert math.isnan(mean) and math.isnan(half)


def test_pass_ks():
  assert pass_ks(1) == (1,)
  assert pass_ks(2) == (1, 2)
  assert pass_ks(4) == (1, 2, 4)
  assert pass_ks(6) == (1, 2, 4, 6)
  assert pass_ks(8) == (1, 2, 4, 8)
  assert pass_ks(9) == (1, 2, 4, 8, 9)


def test_summarize_keys_and_pass1_equals_mean():
  rng = np.random.default_rng(0)
  correct = rng.random((5, 4)) < 0.4
  answers = [[str(int(rng.integers(3))) for _ in range(4)] for _ in range(5)]
  out = summarize(correct, answers, rng.random(5) < 0.5)
  assert set(out) == {"greedy", "mean@4", "pass@1", "pass@2", "pass@4", "maj@4"}
  assert out["pass@1"][0] == pytest.approx(out["mean@4"][0])
  assert out["pass@1"][1] == pytest.approx(out["mean@4"][1])
  assert all(len(v) == 2 for v in out.values())


def test_summarize_small_example_by_hand():
  """Two problems of four samples:
  problem 0: one right (c=1): mean .25, pass@2 = 1 − C(3,2)/C(4,2) = .5; votes a:1, b:2 (b wrong).
  problem 1: three right (c=3): mean .75, pass@2 = 1; votes x:3 (x right)."""
  correct = [[1, 0, 0, 0], [1, 1, 0, 1]]
  answers = [["a", "b", "b", None], ["x", "x", "y", "x"]]
  out = summarize(correct, answers, [True, False])
  t = stats.t.ppf(0.975, 1)
  half = lambda a, b: t * abs(a - b) / 2  # t · s/√2 with s = |a − b|/√2
  expect = {"greedy": (0.5, half(1, 0)), "mean@4": (0.5, half(0.25, 0.75)),
            "pass@1": (0.5, half(0.25, 0.75)), "pass@2": (0.75, half(0.5, 1.0)),
            "pass@4": (1.0, 0.0), "maj@4": (0.5, half(0, 1))}
  assert set(out) == set(expect)
  for key, (m, h) in expect.items():
    assert out[key][0] == pytest.approx(m), key
    assert out[key][1] == pytest.approx(h), key


def test_summarize_without_samples_gives_only_greedy():
  out = summarize(np.zeros((3, 0), bool), [[], [], []], [True, False, True])
  assert set(out) == {"greedy"}
  assert out["greedy"][0] == pytest.approx(2 / 3)


def test_summarize_refuses_mismatched_shapes():
  with pytest.raises(ValueError):
    summarize(np.zeros((3, 2)), [[None] * 2] * 3, [True, False])   # 2 greedy flags for 3
  with pytest.raises(ValueError):
    summarize(np.zeros((3, 2)), [[None] * 2] * 2, [True] * 3)      # 2 answer rows for 3
  with pytest.raises(ValueError):
    summarize(np.zeros(3), [[None]] * 3, [True] * 3)               # correct_ExN not 2-D
