"""The estimator lab: gradient estimates measured against the exact gradient (`pg.tabular`).

On a sequence space small enough to list (V^T sequences), J(θ) = Σ_y π_θ(y) r(y), its gradient
and the true value of every prefix, V(y_<t) = E[r | y_<t], are exact. A *group estimate* is the
gradient one group of G samples gives through a registered advantage estimator and the token-level
REINFORCE surrogate,

    ĝ = (1/G) Σ_i Σ_t A_{i,t} ∇θ log π_θ(y_{i,t} | y_{i,<t}),

and N independent groups give the statistics below (D parameters; ḡ the mean of the N estimates,
Σ their covariance, sd_d the standard deviation of component d):

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

Critics (`value`, `gae` and any registered estimator that refuses `values_BxT = None`):

    exact     V(y_<t), which keeps every λ unbiased: the measurement is of the estimator alone
    noisy     V(y_<t) + σ·ε(y_<t), ε ~ N(0, 1) drawn once per prefix (a function of the state)
    learned   V̂(s) = argmin_v Σ_{i: s ∈ y_i} (G_i − v)², a tabular least-squares fit to the
              Monte-Carlo returns G_i (= r(y_i), γ = 1) of M independent samples: the mean return
              through s, and the mean of all M returns for a state none of them visited
"""

from __future__ import annotations

import functools
import statistics as _statistics
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

import pg
from pg import tabular

NUM_BATCHES = 20  # k, the independent batches behind every standard error


# Problems.

class Problem(NamedTuple):
  """An enumerable problem: a tabular policy at θ and a score over every sequence."""
  theta: jax.Array       # [T, V + 1, V]
  seqs_NxT: jax.Array    # every sequence
  scores_N: jax.Array    # r(y) for each
  vocab_size: int
  length: int


def default_problem(vocab_size=3, length=4, seed=0, scale=0.7) -> Problem:
  """V = 3, T = 4 (81 sequences); r = share of 2s + 1 when the first and last tokens match."""
  seqs = tabular.all_sequences(vocab_size, length)
  twos = jnp.mean((seqs == 2).astype(jnp.float32), axis=1)
  scores = twos + (seqs[:, 0] == seqs[:, -1]).astype(jnp.float32)
  theta = tabular.init_params(jax.random.PRNGKey(seed), vocab_size, length, scale=scale)
  return Problem(theta, seqs, scores, vocab_size, length)


def needle_problem(vocab_size=3, length=6, position=1, symbol=2, seed=0, scale=0.7) -> Problem:
  """Credit assignment: r(y) = 1[y_position = symbol]; the tokens after `position` do not
  matter, so the exact gradient on their parameters θ[t > position] is 0."""
  seqs = tabular.all_sequences(vocab_size, length)
  scores = (seqs[:, position] == symbol).astype(jnp.float32)
  theta = tabular.init_params(jax.random.PRNGKey(seed), vocab_size, length, scale=scale)
  return Problem(theta, seqs, scores, vocab_size, length)


def exact_gradient(p: Problem, offset=0.0):
  """∇J, flattened `[D]`."""
  return jax.grad(tabular.exact_expectation)(p.theta, p.seqs_NxT, p.scores_N + offset).reshape(-1)


def _prefix_index(tokens_BxT, t: int, vocab_size: int):
  """Index of each row's prefix y_<t among the V^t prefixes of length t, `[B]`."""
  if t == 0:
    return jnp.zeros(tokens_BxT.shape[0], jnp.int32)
  return tabular.sequence_index(tokens_BxT[:, :t], vocab_size)


def sequence_probs(p: Problem):
  """π_θ(y) for every listed sequence, `[N]`."""
  return jnp.exp(tabular.sequence_log_prob(p.theta, p.seqs_NxT))


# Critics.

def exact_values(p: Problem):
  """V(y_<t) for every sequence and position, `[N, T]`: E[r | the first t tokens]."""
  prob_N = sequence_probs(p)
  V, T = p.vocab_size, p.length
  out = []
  for t in range(T):
    prefix_N = _prefix_index(p.seqs_NxT, t, V)
    num = jax.ops.segment_sum(prob_N * p.scores_N, prefix_N, num_segments=V ** t)
    den = jax.ops.segment_sum(prob_N, prefix_N, num_segments=V ** t)
    out.append((num / den)[prefix_N])
  return jnp.stack(out, axis=1)


def noisy_values(p: Problem, noise: float, seed: int = 0):
  """A critic of controlled quality: exact V(y_<t) + noise·ε(y_<t), with ε ~ N(0, 1) drawn once
  per prefix (a function of the state only, as a learned critic is), `[N, T]`."""
  v = exact_values(p)
  if noise == 0:
    return v
  V, T = p.vocab_size, p.length
  cols = []
  for t in range(T):
    eps = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), t), (V ** t,))
    cols.append(eps[_prefix_index(p.seqs_NxT, t, V)])
  return v + noise * jnp.stack(cols, axis=1)


def learned_values(p: Problem, num_samples: int, key):
  """A critic fitted to data: tabular least squares on the Monte-Carlo returns of `num_samples`
  (M) sequences sampled independently of everything it is used with, `[N, T]`:

      V̂(y_<t) = Σ_i 1[y_i,<t = y_<t] G_i / Σ_i 1[y_i,<t = y_<t],   G_i = r(y_i)  (γ = 1)

  (the minimiser of Σ_i (G_i − v)² over the samples through the state), and (1/M) Σ_i G_i for a
  state that none of the M samples visited."""
  V, T = p.vocab_size, p.length
  tokens_MxT = tabular.sample(key, p.theta, num_samples)
  returns_M = p.scores_N[tabular.sequence_index(tokens_MxT, V)]
  fallback = jnp.mean(returns_M)
  cols = []
  for t in range(T):
    prefix_M = _prefix_index(tokens_MxT, t, V)
    sums = jax.ops.segment_sum(returns_M, prefix_M, num_segments=V ** t)
    counts = jax.ops.segment_sum(jnp.ones_like(returns_M), prefix_M, num_segments=V ** t)
    fit = jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), fallback)
    cols.append(fit[_prefix_index(p.seqs_NxT, t, V)])
  return jnp.stack(cols, axis=1)


def critic_error(p: Problem, values_NxT) -> float:
  """On-policy RMS error of a critic, exact by enumeration (no sampling error given the critic):

      √( Σ_y π_θ(y) (1/T) Σ_t (V̂(y_<t) − V(y_<t))² )."""
  err_NxT = np.asarray(values_NxT, np.float64) - np.asarray(exact_values(p), np.float64)
  prob_N = np.asarray(sequence_probs(p), np.float64)
  return float(np.sqrt(prob_N @ np.mean(err_NxT ** 2, axis=1) / prob_N.sum()))


def true_advantages(p: Problem):
  """A*(y_<t, y_t) = V(y_≤t) − V(y_<t) with V after the last token = r (γ = 1, the score at the
  end, deterministic transitions), `[N, T]`."""
  v = exact_values(p)
  nxt = jnp.concatenate([v[:, 1:], p.scores_N[:, None]], axis=1)
  return nxt - v


# Estimators from the registry.

def estimator_names() -> tuple:
  """Every registered advantage estimator, in registration order (a fork's included)."""
  return tuple(pg.ADVANTAGE_ESTIMATORS)


def needs_values(name: str) -> bool:
  """Whether an estimator needs a critic: it refuses `values_BxT = None` on a valid input."""
  inputs = pg.AdvantageInputs(jnp.arange(4, dtype=jnp.float32), jnp.ones((4, 2), jnp.float32),
                              group_size=2)
  try:
    pg.get_advantage(name)(inputs, pg.make_hparams(), pg.init_baseline_state())
  except Exception:  # noqa: BLE001 - any refusal means: give it values
    return True
  return False


@functools.lru_cache(maxsize=None)
def _jitted(fn: Callable) -> Callable:
  return jax.jit(fn)


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _sample(key, theta, batch_size: int):
  tokens_BxT = tabular.sample(key, theta, batch_size)
  return tokens_BxT, tabular.sequence_index(tokens_BxT, theta.shape[-1])


def _row_gradients(theta, tokens_BxT, advantages_BxT):
  """∇θ Σ_t A_t log π(y_t | y_<t) for each row, through `pg`'s surrogate, `[B, D]`."""
  mask_1xT = jnp.ones((1, tokens_BxT.shape[1]), jnp.float32)

  def ascent(theta, tokens_T, adv_T):
    logp_1xT = pg.token_log_probs(tabular.logits(theta, tokens_T[None]), tokens_T[None])
    return -jnp.sum(pg.reinforce_token_surrogate(logp_1xT, adv_T[None], mask_1xT))
  grads = jax.vmap(jax.grad(ascent), in_axes=(None, 0, 0))(theta, tokens_BxT, advantages_BxT)
  return grads.reshape(tokens_BxT.shape[0], -1)


@functools.partial(jax.jit, static_argnames=("group_size",))
def _group_gradients(theta, tokens_BxT, advantages_BxT, group_size: int):
  g_BxD = _row_gradients(theta, tokens_BxT, advantages_BxT)
  return g_BxD.reshape(-1, group_size, g_BxD.shape[-1]).mean(axis=1)


def advantages(p: Problem, estimator: str, tokens_BxT, index_B, group_size: int, hp=None,
               offset=0.0, values_NxT=None):
  """The registered estimator's A_{i,t} for sampled rows, `[B, T]`.

  Every estimator gets the state of a converged moving average, b = E[r] exactly (only
  `moving_average` reads it); those that need a critic get `values_NxT` (default: exact V)."""
  hp = pg.make_hparams() if hp is None else hp
  scores_B = p.scores_N[index_B] + offset
  mask_BxT = jnp.ones(tokens_BxT.shape, jnp.float32)
  values = None
  if needs_values(estimator):
    values_NxT = exact_values(p) if values_NxT is None else values_NxT
    values = values_NxT[index_B] + offset
  mean = tabular.exact_expectation(p.theta, p.seqs_NxT, p.scores_N) + offset
  state = {"ema_value": jnp.asarray(mean, jnp.float32), "ema_weight": jnp.ones((), jnp.float32)}
  inputs = pg.AdvantageInputs(scores_B, mask_BxT, values, group_size=group_size)
  return _jitted(pg.get_advantage(estimator))(inputs, hp, state).advantages_BxT


def group_estimates(p: Problem, estimator: str, num_groups: int, group_size: int, key,
                    hp=None, offset=0.0, value_noise=0.0, values_NxT=None):
  """One gradient estimate per group of `group_size` samples, `[num_groups, D]`.

  `offset` is added to every score (a baseline-free estimator's variance grows with it). The
  critic of the estimators that need one: `values_NxT` if given (e.g. `learned_values`), else
  `noisy_values(p, value_noise)` (the exact V at 0)."""
  tokens_BxT, index_B = _sample(key, p.theta, num_groups * group_size)
  if values_NxT is None and needs_values(estimator):
    values_NxT = noisy_values(p, value_noise)
  adv_BxT = advantages(p, estimator, tokens_BxT, index_B, group_size, hp, offset, values_NxT)
  return _group_gradients(p.theta, tokens_BxT, adv_BxT, group_size)


def constant_over_tokens(p: Problem, estimator: str, key, group_size=4, num_groups=64,
                         values_NxT=None) -> bool:
  """Whether the estimator gives every token of a sequence the same advantage (a sequence-level
  estimator), checked on sampled rows: max_i (max_t A_{i,t} − min_t A_{i,t}) ≤ 1e-6·max |A|."""
  tokens_BxT, index_B = _sample(key, p.theta, num_groups * group_size)
  adv = np.asarray(advantages(p, estimator, tokens_BxT, index_B, group_size,
                              values_NxT=values_NxT))
  spread = np.max(adv.max(axis=1) - adv.min(axis=1))
  return bool(spread <= 1e-6 * max(1.0, np.abs(adv).max()))


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
  crit = _statistics.NormalDist().inv_cdf(1 - alpha / (2 * max(1, dims)))
  return Stats(n, *(est.at(i) for i in range(6)), float(np.sqrt(est.value[3] / n / norm2)), z,
               z_dir, float(crit), moments)


def variance_ratio(reference: Stats, other: Stats) -> Estimate:
  """tr Σ_reference / tr Σ_other (the variance reduction factor) and its jackknife standard
  error; batch b of both is left out together."""
  return jackknife(lambda a, b: a.var_D.sum() / b.var_D.sum(), reference.moments, other.moments)


def variance_by_step(g_NxD, p: Problem):
  """Σ of the gradient components' variances per time step t (θ[t] is `[V + 1, V]`), `[T]`."""
  g = np.asarray(g_NxD, np.float64).reshape(g_NxD.shape[0], p.length, -1)
  return g.var(axis=0, ddof=1).sum(axis=1)


class CreditStats(NamedTuple):
  relevant: Estimate    # Σ of the component variances on θ[t < first_irrelevant]
  irrelevant: Estimate  # ... on θ[t ≥ first_irrelevant], where ∇J = 0
  share: Estimate       # irrelevant / (relevant + irrelevant)


def credit_statistics(g_NxD, p: Problem, first_irrelevant: int,
                      num_batches: int = NUM_BATCHES) -> CreditStats:
  """Where an estimator's variance sits, with jackknife standard errors."""
  g = np.asarray(g_NxD, np.float64)
  per_step = g.shape[1] // p.length
  cut = first_irrelevant * per_step

  def fn(s: Summary):
    rel, irr = s.var_D[:cut].sum(), s.var_D[cut:].sum()
    return np.array([rel, irr, irr / max(rel + irr, 1e-30)])
  est = jackknife(fn, Moments.of(g, num_batches))
  return CreditStats(est.at(0), est.at(1), est.at(2))


class AdvantageError(NamedTuple):
  bias2: Estimate     # Σ_{s,a} w(s,a) (E[Â | s,a] − A*(s,a))²
  variance: Estimate  # Σ_{s,a} w(s,a) Var(Â | s,a)


@jax.jit
def _gae(scores_B, values_BxT, lam):
  mask_BxT = jnp.ones(values_BxT.shape, jnp.float32)
  rewards_BxT = pg.per_token_rewards(scores_B, mask_BxT)
  return pg.generalized_advantage_estimation(rewards_BxT, values_BxT, mask_BxT, 1.0, lam)


def gae_advantage_error(p: Problem, lam: float, value_noise: float, num_samples: int, key,
                        values_NxT=None, num_batches: int = NUM_BATCHES) -> AdvantageError:
  """Bias² and variance of GAE(γ = 1, λ) advantages against the true A*, per (state, action):

      bias²    = Σ_{s,a} w(s,a) (m(s,a)² − v(s,a)/n(s,a)),   variance = Σ_{s,a} w(s,a) v(s,a)

  with m, v (ddof 1) and n the mean, variance and count of Â − A* over the visits to (s, a) at
  every position t among `num_samples` sampled sequences, w = n / Σ n over the pairs visited at
  least twice (m² − v/n is unbiased for the squared mean error). The critic: `values_NxT`, or
  `noisy_values(p, value_noise)`; jackknife standard errors over batches of sequences."""
  tokens_BxT, index_B = _sample(key, p.theta, num_samples)
  values_NxT = noisy_values(p, value_noise) if values_NxT is None else values_NxT
  adv_BxT = _gae(p.scores_N[index_B], values_NxT[index_B], jnp.float32(lam))
  err_BxT = np.asarray(adv_BxT, np.float64) - np.asarray(true_advantages(p)[index_B], np.float64)
  V, T = p.vocab_size, p.length
  # category of (t, y_≤t): the index of the prefix of length t + 1, after those of shorter ones
  start = 0
  cat_BxT = np.zeros(err_BxT.shape, np.int64)
  for t in range(T):
    cat_BxT[:, t] = start + np.asarray(tabular.sequence_index(tokens_BxT[:, :t + 1], V))
    start += V ** (t + 1)
  moments = Moments.by_category(err_BxT, cat_BxT, start, num_batches)

  def fn(s: Summary):
    seen = s.n_D >= 2
    w = s.n_D[seen] / s.n_D[seen].sum()
    m, v, n = s.mean_D[seen], s.var_D[seen], s.n_D[seen]
    return np.array([np.sum(w * (m ** 2 - v / n)), np.sum(w * v)])
  est = jackknife(fn, moments)
  return AdvantageError(est.at(0), est.at(1))
