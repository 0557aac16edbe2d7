"""Held-out evaluation estimators: pass@k, mean@k, maj@k, and their intervals over problems.

For one problem, n samples of which c are correct:

    pass@k = 1 − C(n − c, k) / C(n, k)        (Chen et al., 2021, eq. 1; k ≤ n)

the probability that k samples drawn without replacement from the n contain a correct one: an
unbiased estimate of the chance that k fresh samples contain one. It is computed as the product
1 − Π_{i = n−c+1}^{n} (1 − k / i), which never forms a binomial coefficient. mean@k is the mean
correctness of the samples (the unbiased pass@1). maj@k is 1 when the most frequent extracted
answer among the samples is correct (ties: the answer seen first; a sample with no answer casts
no vote; no answer at all scores 0).

A score over a set of E problems is the mean of the per-problem scores, with the half-width of
its Student-t interval over problems (`mean_and_half_width`). Host-side NumPy: evaluation runs
between compiled chunks, on decoded text.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np
from scipy import stats


def pass_at_k(n, c, k: int):
  """Unbiased pass@k per problem.

  Args:
    n: samples per problem, int or int array `[E]` (every n ≥ k).
    c: correct samples per problem, int or int array `[E]`, 0 ≤ c ≤ n.
    k: the budget, 1 ≤ k ≤ n.

  Returns:
    float64 `[E]` (or a scalar): 1 − C(n − c, k) / C(n, k).
  """
  n, c = np.asarray(n, np.int64), np.asarray(c, np.int64)
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"pass_at_k: k must be a positive int, got {k!r}.")
  if np.any(n < k):
    raise ValueError(f"pass_at_k: every problem needs n >= k = {k} samples, got n = "
                     f"{int(np.min(n))}.")
  if np.any((c < 0) | (c > n)):
    raise ValueError("pass_at_k: correct counts must lie in [0, n].")
  n_E, c_E = np.broadcast_arrays(np.atleast_1d(n), np.atleast_1d(c))
  out = np.empty(n_E.shape, np.float64)
  for e, (ne, ce) in enumerate(zip(n_E, c_E)):
    if ne - ce < k:
      out[e] = 1.0
    else:
      i = np.arange(ne - ce + 1, ne + 1, dtype=np.float64)
      out[e] = 1.0 - np.prod(1.0 - k / i)
  return out if np.ndim(n) or np.ndim(c) else float(out[0])


def majority_correct(answers: Sequence[Hashable | None], correct: Sequence[bool]) -> float:
  """maj@k of one problem: 1.0 if the most frequent non-None answer among its samples is one of
  the correct ones. `answers[i]` is sample i's extracted (normalised) answer, None for none;
  `correct[i]` whether sample i is right. Ties go to the answer seen first."""
  if len(answers) != len(correct):
    raise ValueError(f"majority_correct: {len(answers)} answers, {len(correct)} flags.")
  counts: dict = {}
  right: dict = {}
  for a, ok in zip(answers, correct):
    if a is None:
      continue
    counts[a] = counts.get(a, 0) + 1
    right[a] = right.get(a, False) or bool(ok)
  if not counts:
    return 0.0
  best = max(counts.values())
  winner = next(a for a in counts if counts[a] == best)  # dicts keep first-seen order
  return float(right[winner])


def mean_and_half_width(x_E, confidence: float = 0.95):
  """(mean, half-width of its Student-t interval) of per-problem scores `x_E`; the half-width
  is t_{E−1} · s / √E (0 for one problem; NaN for none)."""
  x_E = np.asarray(x_E, np.float64).reshape(-1)
  E = x_E.size
  if E == 0:
    return float("nan"), float("nan")
  mean = float(np.mean(x_E))
  if E == 1:
    return mean, 0.0
  sem = float(np.std(x_E, ddof=1) / np.sqrt(E))
  return mean, float(stats.t.ppf(0.5 + confidence / 2, E - 1) * sem)


def pass_ks(n: int) -> tuple:
  """The k reported for n samples: 1, 2, 4, ... up to n (and n itself)."""
  ks = [1]
  while ks[-1] * 2 <= n:
    ks.append(ks[-1] * 2)
  if ks[-1] != n:
    ks.append(n)
  return tuple(ks)


def summarize(correct_ExN, answers_ExN, greedy_correct_E, confidence: float = 0.95) -> dict:
  """The evaluation scores of E problems, each with n samples and one greedy answer.

  Args:
    correct_ExN: bool/float `[E, n]`, whether sample j of problem e is right.
    answers_ExN: `[E][n]` extracted answers (None: none), for maj@n.
    greedy_correct_E: bool/float `[E]`, the greedy answer's correctness.

  Returns:
    {"greedy": (mean, half), "mean@n": ..., "pass@k": ... for k in `pass_ks(n)`,
     "maj@n": ...}: each the mean over problems and its interval's half-width.
  """
  correct_ExN = np.asarray(correct_ExN, np.float64)
  if correct_ExN.ndim != 2:
    raise ValueError(f"summarize: correct_ExN must be [E, n], got shape {correct_ExN.shape}.")
  E, n = correct_ExN.shape
  greedy_E = np.asarray(greedy_correct_E, np.float64).reshape(-1)
  if greedy_E.shape != (E,) or len(answers_ExN) != E:
    raise ValueError(f"summarize: {E} problems in correct_ExN, {greedy_E.shape[0]} greedy "
                     f"flags and {len(answers_ExN)} answer rows.")
  out = {"greedy": mean_and_half_width(greedy_E, confidence)}
  if n:
    c_E = correct_ExN.sum(axis=1).astype(np.int64)
    out[f"mean@{n}"] = mean_and_half_width(correct_ExN.mean(axis=1), confidence)
    for k in pass_ks(n):
      out[f"pass@{k}"] = mean_and_half_width(pass_at_k(np.full(E, n), c_E, k), confidence)
    maj_E = [majority_correct(a, c) for a, c in zip(answers_ExN, correct_ExN > 0.5)]
    out[f"maj@{n}"] = mean_and_half_width(maj_E, confidence)
  return out
