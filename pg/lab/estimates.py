"""Sampled gradient estimates through the registry's advantage estimators, on an enumerable problem.

A *group estimate* is the gradient one group of G samples gives through a registered advantage
estimator and the token-level REINFORCE surrogate,

    ĝ = (1/G) Σ_i Σ_t A_{i,t} ∇θ log π_θ(y_{i,t} | y_{i,<t}),

and N independent groups are what `pg.lab.statistics` measures against the exact ∇J of
`pg.lab.problems`. Every registered estimator (a fork's included) is usable; those that refuse
`values_BxT = None` get a critic (exact, noisy or learned: `pg.lab.problems`).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import pg
from pg.core import tabular
from pg.lab import problems
from pg.lab.problems import Problem
from pg.lab.statistics import NUM_BATCHES, Estimate, Moments, Summary, jackknife


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
def sample(key, theta, batch_size: int):
  """`batch_size` sequences from π_θ, `[B, T]`, and each one's index in the problem's list,
  `[B]`."""
  tokens_BxT = tabular.sample(key, theta, batch_size)
  return tokens_BxT, tabular.sequence_index(tokens_BxT, theta.shape[-1])


# Gradients.

def row_gradients(theta, tokens_BxT, advantages_BxT):
  """The score-function gradient of each row through `pg`'s token-level surrogate, `[B, D]`:

      g_i = ∇θ Σ_t A_{i,t} log π_θ(y_{i,t} | y_{i,<t})

  (the negated gradient of the summed `pg.reinforce_token_surrogate` of a batch of one)."""
  mask_1xT = jnp.ones((1, tokens_BxT.shape[1]), jnp.float32)

  def ascent(theta, tokens_T, adv_T):
    logp_1xT = pg.token_log_probs(tabular.logits(theta, tokens_T[None]), tokens_T[None])
    return -jnp.sum(pg.reinforce_token_surrogate(logp_1xT, adv_T[None], mask_1xT))
  grads = jax.vmap(jax.grad(ascent), in_axes=(None, 0, 0))(theta, tokens_BxT, advantages_BxT)
  return grads.reshape(tokens_BxT.shape[0], -1)


@functools.partial(jax.jit, static_argnames=("group_size",))
def group_gradients(theta, tokens_BxT, advantages_BxT, group_size: int):
  """One estimate per group of `group_size` consecutive rows, ĝ = (1/G) Σ_{i ∈ group} g_i with
  g_i the `row_gradients`, `[B / G, D]`."""
  g_BxD = row_gradients(theta, tokens_BxT, advantages_BxT)
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
    values_NxT = problems.exact_values(p) if values_NxT is None else values_NxT
    values = values_NxT[index_B] + offset
  mean = tabular.exact_expectation(p.theta, p.seqs_NxT, p.scores_N) + offset
  state = {"ema_value": jnp.asarray(mean, jnp.float32), "ema_weight": jnp.ones((), jnp.float32)}
  registration = pg.get_advantage(estimator)
  extra = {}
  if registration.needs_greedy:  # ReMax: the greedy response's score, one per problem
    extra["baseline_scores_B"] = jnp.full(scores_B.shape, p.scores_N[problems.greedy_index(p)]
                                          + offset)
  if registration.needs_components and p.components_KxN is not None:  # GDPO: r = Σ_k r_k
    components = p.components_KxN[:, index_B]
    extra["components_KxB"] = components.at[0].add(offset)  # the offset joins one part
    extra["component_weights_K"] = jnp.ones(components.shape[0], jnp.float32)
  inputs = pg.AdvantageInputs(scores_B, mask_BxT, values, group_size=group_size, **extra)
  return _jitted(registration)(inputs, hp, state).advantages_BxT


def group_estimates(p: Problem, estimator: str, num_groups: int, group_size: int, key,
                    hp=None, offset=0.0, value_noise=0.0, values_NxT=None):
  """`num_groups` independent group estimates ĝ (the module docstring's), `[num_groups, D]`.

  `offset` is added to every score (a baseline-free estimator's variance grows with it). The
  critic of the estimators that need one: `values_NxT` if given (e.g. `learned_values`), else
  `noisy_values(p, value_noise)` (the exact V at 0)."""
  tokens_BxT, index_B = sample(key, p.theta, num_groups * group_size)
  if values_NxT is None and needs_values(estimator):
    values_NxT = problems.noisy_values(p, value_noise)
  adv_BxT = advantages(p, estimator, tokens_BxT, index_B, group_size, hp, offset, values_NxT)
  return group_gradients(p.theta, tokens_BxT, adv_BxT, group_size)


def constant_over_tokens(p: Problem, estimator: str, key, group_size=4, num_groups=64,
                         values_NxT=None) -> bool:
  """Whether the estimator gives every token of a sequence the same advantage (a sequence-level
  estimator), checked on sampled rows: max_i (max_t A_{i,t} − min_t A_{i,t}) ≤ 1e-6·max |A|."""
  tokens_BxT, index_B = sample(key, p.theta, num_groups * group_size)
  adv_BxT = np.asarray(advantages(p, estimator, tokens_BxT, index_B, group_size,
                                  values_NxT=values_NxT))
  spread = np.max(adv_BxT.max(axis=1) - adv_BxT.min(axis=1))
  return bool(spread <= 1e-6 * max(1.0, np.abs(adv_BxT).max()))


# GAE's advantages against the true ones.

class AdvantageError(NamedTuple):
  bias2: Estimate     # Σ_{s,a} w(s,a) (E[Â | s,a] − A*(s,a))²
  variance: Estimate  # Σ_{s,a} w(s,a) Var(Â | s,a)


@jax.jit
def _gae(scores_B, values_BxT, lam):
  mask_BxT = jnp.ones(values_BxT.shape, jnp.float32)
  rewards_BxT = pg.per_token_rewards(scores_B, mask_BxT)
  return pg.generalized_advantage_estimation(rewards_BxT, values_BxT, mask_BxT, 1.0, lam)


def _state_action_index(tokens_BxT, vocab_size: int):
  """Category of (t, y_≤t), the index of the prefix of length t + 1 after those of shorter
  ones, `[B, T]`, and the number of categories."""
  start = 0
  cat_BxT = np.zeros(tokens_BxT.shape, np.int64)
  for t in range(tokens_BxT.shape[1]):
    cat_BxT[:, t] = start + np.asarray(tabular.sequence_index(tokens_BxT[:, :t + 1], vocab_size))
    start += vocab_size ** (t + 1)
  return cat_BxT, start


def gae_advantage_error(p: Problem, lam: float, value_noise: float, num_samples: int, key,
                        values_NxT=None, num_batches: int = NUM_BATCHES) -> AdvantageError:
  """Bias² and variance of GAE(γ = 1, λ) advantages against the true A*, per (state, action):

      bias²    = Σ_{s,a} w(s,a) (m(s,a)² − v(s,a)/n(s,a)),   variance = Σ_{s,a} w(s,a) v(s,a)

  with m, v (ddof 1) and n the mean, variance and count of Â − A* over the visits to (s, a) at
  every position t among `num_samples` sampled sequences, w = n / Σ n over the pairs visited at
  least twice (m² − v/n is unbiased for the squared mean error). The critic: `values_NxT`, or
  `noisy_values(p, value_noise)`; jackknife standard errors over batches of sequences."""
  tokens_BxT, index_B = sample(key, p.theta, num_samples)
  values_NxT = problems.noisy_values(p, value_noise) if values_NxT is None else values_NxT
  adv_BxT = _gae(p.scores_N[index_B], values_NxT[index_B], jnp.float32(lam))
  err_BxT = (np.asarray(adv_BxT, np.float64) -
             np.asarray(problems.true_advantages(p)[index_B], np.float64))
  cat_BxT, num_categories = _state_action_index(tokens_BxT, p.vocab_size)
  moments = Moments.by_category(err_BxT, cat_BxT, num_categories, num_batches)

  def fn(s: Summary):
    seen = s.n_D >= 2
    w = s.n_D[seen] / s.n_D[seen].sum()
    m, v, n = s.mean_D[seen], s.var_D[seen], s.n_D[seen]
    return np.array([np.sum(w * (m ** 2 - v / n)), np.sum(w * v)])
  est = jackknife(fn, moments)
  return AdvantageError(est.at(0), est.at(1))
