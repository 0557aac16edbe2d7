"""Statistics of gradient estimates against the exact gradient, each with a standard error.

N independent estimates ĝ give (D parameters; ḡ the mean of the N estimates, Σ their
covariance, sd_d the standard deviation of component d):

    relative bias   ‖ḡ − ∇J‖ / ‖∇J‖    (an unbiased estimator's sits near the noise floor
                                         √(tr Σ / N) / ‖∇J‖ and falls as 1/√N)
    scale           ⟨ḡ, ∇J⟩ / ‖∇J‖²     (1 when unbiased)
    cosine          ⟨ḡ, ∇J⟩ / (‖ḡ‖ ‖∇J‖)
    max |z|         max_d |ḡ_d − ∇J_d| / (sd_d / √N) over the components that vary, against the
                    two-sided Bonferroni threshold; "turned": the same test on the part of ĝ
                    orthogonal to ∇J, r = ĝ − (⟨ĝ, ∇J⟩ / ‖∇J‖²) ∇J, whose mean is 0 when the
                    estimator is unbiased *or* only rescales ∇J
    variance        tr Σ, SNR = ‖∇J‖² / tr Σ and ‖ḡ‖² / tr Σ (per group estimate)

Standard errors (`jackknife`): the N estimates are split into k = 20 independent batches of
consecutive estimates; every statistic above is a smooth function f of the batches' pooled
moments (Σ x, Σ x², counts), and its standard error is the delete-one-batch jackknife

    se(f)² = (k − 1)/k · Σ_b (f_(b) − mean_b f_(b))²,   f_(b) = f without batch b,

which for a mean is exactly the batch-means standard error sd_b / √k, and for a ratio or a norm
is its delta-method linearisation, estimated from the batches.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Callable, NamedTuple, Optional

import numpy as np

NUM_BATCHES = 20  # k, the independent batches behind every standard error


# Moments by batch and the jackknife.

class Summary(NamedTuple):
  """Pooled moments of some of the batches: count, mean and variance (ddof 1) per component."""
  n_D: np.ndarray
  mean_D: np.ndarray
  var_D: np.ndarray


class Moments(NamedTuple):
  """Sums over k independent batches: counts n_KxD, Σ x s1_KxD and Σ x² s2_KxD (float64)."""
  n_KxD: np.ndarray
  s1_KxD: np.ndarray
  s2_KxD: np.ndarray

  @classmethod
  def of(cls, x_NxD, num_batches: int = NUM_BATCHES) -> "Moments":
    """k batches of consecutive rows of `x_NxD` (`[N]` is read as `[N, 1]`)."""
    x = np.asarray(x_NxD, np.float64)
    x = x.reshape(x.shape[0], -1)
    if x.shape[0] < 2 * num_batches:
      raise ValueError(f"Moments.of: {x.shape[0]} rows cannot fill {num_batches} batches of 2.")
    parts = np.array_split(x, num_batches)
    n = np.stack([np.full(x.shape[1], len(b), np.float64) for b in parts])
    return cls(n, np.stack([b.sum(0) for b in parts]), np.stack([(b * b).sum(0) for b in parts]))

  @classmethod
  def by_category(cls, x_NxM, category_NxM, num_categories: int,
                  num_batches: int = NUM_BATCHES) -> "Moments":
    """Per-category sums, D = `num_categories`: row i (an independent unit, in one of k batches
    of consecutive rows) adds each x_{i,j} to the sums of its category c_{i,j}."""
    x = np.asarray(x_NxM, np.float64)
    rows = [len(b) for b in np.array_split(np.arange(x.shape[0]), num_batches)]
    batch_NxM = np.broadcast_to(np.repeat(np.arange(num_batches), rows)[:, None], x.shape)
    x = x.reshape(-1)
    flat = batch_NxM.reshape(-1) * num_categories + np.asarray(category_NxM).reshape(-1)
    size = num_batches * num_categories
    sums = [np.bincount(flat, w, minlength=size).reshape(num_batches, num_categories)
            for w in (None, x, x * x)]
    return cls(*sums)

  def summary(self, drop: Optional[int] = None) -> Summary:
    """The pooled moments of every batch, or of every batch but `drop`."""
    n, s1, s2 = (a.sum(0) - (a[drop] if drop is not None else 0.0)
                 for a in (self.n_KxD, self.s1_KxD, self.s2_KxD))
    safe = np.maximum(n, 1.0)
    mean = s1 / safe
    var = np.maximum(s2 - s1 * mean, 0.0) / np.maximum(n - 1.0, 1.0)
    return Summary(n, mean, var)


class Estimate(NamedTuple):
  """A measured number and its standard error (arrays for a vector of statistics)."""
  value: float
  se: float

  def at(self, i) -> "Estimate":
    """Entry i of a vector of statistics."""
    return Estimate(float(np.asarray(self.value)[i]), float(np.asarray(self.se)[i]))


def jackknife(fn: Callable, *moments: Moments) -> Estimate:
  """fn(*summaries) (a number or a vector) on all k batches, with its delete-one-batch jackknife
  standard error se² = (k − 1)/k Σ_b (f_(b) − mean f_(·))². The `moments` must share k; batch b
  of each is left out together (valid when the k tuples of batches are independent)."""
  k = moments[0].n_KxD.shape[0]
  if any(m.n_KxD.shape[0] != k for m in moments):
    raise ValueError("jackknife: every Moments needs the same number of batches.")
  full = np.asarray(fn(*[m.summary() for m in moments]), np.float64)
  loo_K = np.stack([np.asarray(fn(*[m.summary(b) for m in moments]), np.float64)
                    for b in range(k)])
  se = np.sqrt((k - 1) / k * np.sum((loo_K - loo_K.mean(0)) ** 2, axis=0))
  if full.ndim == 0:
    return Estimate(float(full), float(se))
  return Estimate(full, se)


def diff_z(a: Estimate, b: Estimate) -> float:
  """(a − b) / se(a − b) for independent estimates."""
  return (a.value - b.value) / max(np.hypot(a.se, b.se), 1e-300)


# Statistics of gradient estimates.

class Stats(NamedTuple):
  n: int
  relative_bias: Estimate    # ‖ḡ − ∇J‖ / ‖∇J‖
  scale: Estimate            # ⟨ḡ, ∇J⟩ / ‖∇J‖²
  cosine: Estimate           # ⟨ḡ, ∇J⟩ / (‖ḡ‖ ‖∇J‖)
  variance: Estimate         # tr Σ per group estimate
  snr: Estimate              # ‖∇J‖² / tr Σ
  own_snr: Estimate          # ‖ḡ‖² / tr Σ: the SNR of what a biased estimator does estimate
  noise_floor: float         # √(tr Σ / N) / ‖∇J‖: an unbiased estimator's relative bias
  max_abs_z: float           # of ḡ − ∇J, per component
  max_abs_z_direction: float  # of the mean of r = ĝ − ⟨ĝ, ∇J⟩/‖∇J‖² ∇J, per component
  z_threshold: float         # two-sided Bonferroni at α
  moments: Moments           # of ĝ, by batch (for statistics across estimators)

  @property
  def biased(self) -> bool:
    return self.max_abs_z > self.z_threshold

  @property
  def turned(self) -> bool:
    """The mean is not a multiple of ∇J (not merely rescaled)."""
    return self.max_abs_z_direction > self.z_threshold


def _max_abs_z(x_NxD, target_D):
  sd = x_NxD.std(axis=0, ddof=1)
  varies = sd > 1e-12 * max(1e-30, sd.max())
  z = np.abs(x_NxD.mean(axis=0)[varies] - target_D[varies]) / (sd[varies] / np.sqrt(len(x_NxD)))
  return float(z.max()) if z.size else 0.0, int(varies.sum())


def statistics_of(g_NxD, exact_D, alpha=1e-3, num_batches: int = NUM_BATCHES) -> Stats:
  """The module docstring's statistics with jackknife standard errors over `num_batches`
  batches; the z thresholds are two-sided Bonferroni at `alpha` over the components that vary
  (the others must equal the exact gradient)."""
  g = np.asarray(g_NxD, np.float64)
  e = np.asarray(exact_D, np.float64)
  n = g.shape[0]
  norm2 = float(e @ e)
  moments = Moments.of(g, num_batches)

  def fn(s: Summary):
    trace = s.var_D.sum()
    m = s.mean_D
    return np.array([np.linalg.norm(m - e) / np.sqrt(norm2), m @ e / norm2,
                     m @ e / (np.linalg.norm(m) * np.sqrt(norm2) + 1e-30), trace,
                     norm2 / trace, m @ m / trace])
  est = jackknife(fn, moments)
  z, dims = _max_abs_z(g, e)
  r_NxD = g - np.outer(g @ e / norm2, e)
  z_dir, _ = _max_abs_z(r_NxD, np.zeros_like(e))
  crit = NormalDist().inv_cdf(1 - alpha / (2 * max(1, dims)))
  return Stats(n, *(est.at(i) for i in range(6)), float(np.sqrt(est.value[3] / n / norm2)), z,
               z_dir, float(crit), moments)


def variance_ratio(reference: Stats, other: Stats) -> Estimate:
  """tr Σ_reference / tr Σ_other (the variance reduction factor) and its jackknife standard
  error; batch b of both is left out together."""
  return jackknife(lambda a, b: a.var_D.sum() / b.var_D.sum(), reference.moments, other.moments)


# Where the variance sits.

def variance_by_step(g_NxD, length: int):
  """Σ of the gradient components' variances per time step t (θ[t] is `[V + 1, V]`), `[T]`."""
  g = np.asarray(g_NxD, np.float64).reshape(g_NxD.shape[0], length, -1)
  return g.var(axis=0, ddof=1).sum(axis=1)


class CreditStats(NamedTuple):
  relevant: Estimate    # Σ of the component variances on θ[t < first_irrelevant]
  irrelevant: Estimate  # ... on θ[t ≥ first_irrelevant], where ∇J = 0
  share: Estimate       # irrelevant / (relevant + irrelevant)


def credit_statistics(g_NxD, length: int, first_irrelevant: int,
                      num_batches: int = NUM_BATCHES) -> CreditStats:
  """Where an estimator's variance sits over the T = `length` steps, with jackknife standard
  errors."""
  g = np.asarray(g_NxD, np.float64)
  cut = first_irrelevant * (g.shape[1] // length)

  def fn(s: Summary):
    rel, irr = s.var_D[:cut].sum(), s.var_D[cut:].sum()
    return np.array([rel, irr, irr / max(rel + irr, 1e-30)])
  est = jackknife(fn, Moments.of(g, num_batches))
  return CreditStats(est.at(0), est.at(1), est.at(2))
