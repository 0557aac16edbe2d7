"""The estimator lab: gradient estimates measured against the exact gradient (`pg.tabular`).

On a sequence space small enough to list (V^T sequences), J(θ) = Σ_y π_θ(y) r(y), its gradient
and the true value of every prefix, V(y_<t) = E[r | y_<t], are exact. A *group estimate* is the
gradient one group of G samples gives through a registered advantage estimator and the token-level
REINFORCE surrogate,

    ĝ = (1/G) Σ_i Σ_t A_{i,t} ∇θ log π_θ(y_{i,t} | y_{i,<t}),

and N independent groups give the statistics below (D parameters; Σ the covariance of ĝ):

    relative bias   ‖mean ĝ − ∇J‖ / ‖∇J‖ ± its standard error (delta method); noise floor
                    √(tr Σ / N) / ‖∇J‖, the size it has when the estimator is unbiased
    scale           ⟨mean ĝ, ∇J⟩ / ‖∇J‖²    with its standard error (1 when unbiased)
    max |z|         over the components that vary, against a Bonferroni threshold
    variance        tr Σ, SNR = ‖∇J‖² / tr Σ and ‖mean ĝ‖² / tr Σ (per group estimate)

Estimators that need a critic (`value`, `gae`) get the exact V(y_<t), which makes them unbiased
at any λ: the point of the measurement is the estimator, not a critic's error.
"""

from __future__ import annotations

import statistics
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import pg
from pg import tabular

NEEDS_VALUES = ("value", "gae")


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


def variance_by_step(g_NxD, p: Problem):
  """Σ of the gradient components' variances per time step t (θ[t] is `[V + 1, V]`), `[T]`."""
  g = np.asarray(g_NxD, np.float64).reshape(g_NxD.shape[0], p.length, -1)
  return g.var(axis=0, ddof=1).sum(axis=1)


def exact_gradient(p: Problem, offset=0.0):
  """∇J, flattened `[D]`."""
  return jax.grad(tabular.exact_expectation)(p.theta, p.seqs_NxT, p.scores_N + offset).reshape(-1)


def exact_values(p: Problem):
  """V(y_<t) for every sequence and position, `[N, T]`: E[r | the first t tokens]."""
  prob_N = jnp.exp(tabular.sequence_log_prob(p.theta, p.seqs_NxT))
  V, T = p.vocab_size, p.length
  out = []
  for t in range(T):
    prefix_N = (tabular.sequence_index(p.seqs_NxT[:, :t], V) if t else
                jnp.zeros(p.seqs_NxT.shape[0], jnp.int32))
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
    prefix_N = (tabular.sequence_index(p.seqs_NxT[:, :t], V) if t else
                jnp.zeros(p.seqs_NxT.shape[0], jnp.int32))
    eps = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), t), (V ** t,))
    cols.append(eps[prefix_N])
  return v + noise * jnp.stack(cols, axis=1)


def true_advantages(p: Problem):
  """A*(y_<t, y_t) = V(y_≤t) − V(y_<t) with V after the last token = r (γ = 1, the score at the
  end, deterministic transitions), `[N, T]`."""
  v = exact_values(p)
  nxt = jnp.concatenate([v[:, 1:], p.scores_N[:, None]], axis=1)
  return nxt - v


def _row_gradients(theta, tokens_BxT, advantages_BxT):
  """∇θ Σ_t A_t log π(y_t | y_<t) for each row, `[B, D]`."""
  mask_1xT = jnp.ones((1, tokens_BxT.shape[1]), jnp.float32)

  def ascent(theta, tokens_T, adv_T):
    logp_1xT = pg.token_log_probs(tabular.logits(theta, tokens_T[None]), tokens_T[None])
    return -jnp.sum(pg.reinforce_token_surrogate(logp_1xT, adv_T[None], mask_1xT))
  grads = jax.vmap(jax.grad(ascent), in_axes=(None, 0, 0))(theta, tokens_BxT, advantages_BxT)
  return grads.reshape(tokens_BxT.shape[0], -1)


def group_estimates(p: Problem, estimator: str, num_groups: int, group_size: int, key,
                    hp=None, offset=0.0, value_noise=0.0):
  """One gradient estimate per group of `group_size` samples, `[num_groups, D]`.

  `offset` is added to every score (a baseline-free estimator's variance grows with it);
  `value_noise` makes the critic of `value`/`gae` imperfect (`noisy_values`).
  `moving_average` gets the state of a converged EMA: b = E[r] exactly."""
  hp = pg.make_hparams() if hp is None else hp
  B = num_groups * group_size
  tokens_BxT = tabular.sample(key, p.theta, B)
  index_B = tabular.sequence_index(tokens_BxT, p.vocab_size)
  scores_B = p.scores_N[index_B] + offset
  mask_BxT = jnp.ones(tokens_BxT.shape, jnp.float32)
  values = (noisy_values(p, value_noise)[index_B] + offset if estimator in NEEDS_VALUES
            else None)
  state = pg.init_baseline_state()
  if estimator == "moving_average":
    mean = tabular.exact_expectation(p.theta, p.seqs_NxT, p.scores_N) + offset
    state = {"ema_value": jnp.asarray(mean, jnp.float32), "ema_weight": jnp.ones((),
                                                                                  jnp.float32)}
  inputs = pg.AdvantageInputs(scores_B, mask_BxT, values, group_size=group_size)
  adv = pg.get_advantage(estimator)(inputs, hp, state)
  g_BxD = _row_gradients(p.theta, tokens_BxT, adv.advantages_BxT)
  return g_BxD.reshape(num_groups, group_size, -1).mean(axis=1)


class Stats(NamedTuple):
  n: int
  relative_bias: float
  relative_bias_se: float  # delta method: sd of ĝ along (mean − exact), over √N ‖∇J‖
  noise_floor: float
  scale: float
  scale_se: float
  cosine: float
  max_abs_z: float
  z_threshold: float
  variance: float     # tr Σ per group estimate
  variance_se: float  # its standard error (from the spread of ‖ĝ_i − mean ĝ‖²)
  snr: float          # ‖∇J‖² / tr Σ
  own_snr: float      # ‖mean ĝ‖² / tr Σ: the SNR of what a biased estimator does estimate

  @property
  def biased(self) -> bool:
    return self.max_abs_z > self.z_threshold


def statistics_of(g_NxD, exact_D, alpha=1e-3) -> Stats:
  """The module docstring's statistics; the z threshold is two-sided Bonferroni at `alpha`
  over the components that vary (the others must equal the exact gradient)."""
  g = np.asarray(g_NxD, np.float64)
  e = np.asarray(exact_D, np.float64)
  n = g.shape[0]
  mean = g.mean(axis=0)
  sd = g.std(axis=0, ddof=1)
  varies = sd > 0
  norm2 = float(e @ e)
  trace = float(np.sum(sd ** 2))
  sq_N = np.sum((g - mean) ** 2, axis=1) * n / (n - 1)
  proj_n = g @ e / norm2
  se = sd[varies] / np.sqrt(n)
  z = np.abs(mean[varies] - e[varies]) / se
  crit = statistics.NormalDist().inv_cdf(1 - alpha / (2 * max(1, int(varies.sum()))))
  diff = mean - e
  u = diff / (np.linalg.norm(diff) + 1e-30)
  bias_se = float((g @ u).std(ddof=1) / np.sqrt(n) / np.sqrt(norm2))
  return Stats(n, float(np.linalg.norm(diff) / np.sqrt(norm2)), bias_se,
               float(np.sqrt(trace / n / norm2)), float(proj_n.mean()),
               float(proj_n.std(ddof=1) / np.sqrt(n)),
               float(mean @ e / (np.linalg.norm(mean) * np.sqrt(norm2) + 1e-30)),
               float(z.max()), float(crit), trace, float(sq_N.std(ddof=1) / np.sqrt(n)),
               norm2 / trace, float(mean @ mean) / trace)


def gae_advantage_error(p: Problem, lam: float, value_noise: float, num_samples: int, key):
  """Bias² and variance of GAE(γ = 1, λ) advantages against the true A*, per (state, action):

      bias² = Σ_{s,a} w(s,a) (E[Â | s,a] − A*(s,a))²,   variance = Σ_{s,a} w(s,a) Var(Â | s,a)

  with w the visit frequencies over every position t, from `num_samples` sampled sequences."""
  tokens_BxT = tabular.sample(key, p.theta, num_samples)
  index_B = tabular.sequence_index(tokens_BxT, p.vocab_size)
  mask_BxT = jnp.ones(tokens_BxT.shape, jnp.float32)
  values_BxT = noisy_values(p, value_noise)[index_B]
  rewards_BxT = pg.per_token_rewards(p.scores_N[index_B], mask_BxT)
  adv_BxT = np.asarray(pg.generalized_advantage_estimation(rewards_BxT, values_BxT, mask_BxT,
                                                           1.0, lam), np.float64)
  true_BxT = np.asarray(true_advantages(p)[index_B], np.float64)
  err = adv_BxT - true_BxT
  V, T = p.vocab_size, p.length
  bias2 = variance = 0.0
  for t in range(T):
    sa_B = np.asarray(tabular.sequence_index(tokens_BxT[:, :t + 1], V))
    counts = np.bincount(sa_B, minlength=V ** (t + 1)).astype(np.float64)
    seen = counts > 0
    mean = np.bincount(sa_B, err[:, t], minlength=V ** (t + 1))[seen] / counts[seen]
    sq = np.bincount(sa_B, err[:, t] ** 2, minlength=V ** (t + 1))[seen] / counts[seen]
    w = counts[seen] / (num_samples * T)
    bias2 += float(np.sum(w * mean ** 2))
    variance += float(np.sum(w * (sq - mean ** 2)))
  return bias2, variance
