"""Enumerable problems: a tabular policy at θ, a score over every sequence, and exact answers.

On a sequence space small enough to list (V^T sequences, `pg.core.tabular`), the objective
J(θ) = Σ_y π_θ(y) r(y), its gradient ∇J and the true value of every prefix,
V(y_<t) = E[r | y_<t], are exact (autodiff and sums over the list).

Critics of controlled quality, for the estimators that need one:

    exact     V(y_<t), which keeps every λ unbiased: the measurement is of the estimator alone
    noisy     V(y_<t) + σ·ε(y_<t), ε ~ N(0, 1) drawn once per prefix (a function of the state)
    learned   V̂(s) = argmin_v Σ_{i: s ∈ y_i} (G_i − v)², a tabular least-squares fit to the
              Monte-Carlo returns G_i (= r(y_i), γ = 1) of M independent samples: the mean return
              through s, and the mean of all M returns for a state none of them visited
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from pg.core import tabular


class Problem(NamedTuple):
  """An enumerable problem: a tabular policy at θ and a score over every sequence."""
  theta: jax.Array       # [T, V + 1, V]
  seqs_NxT: jax.Array    # every sequence
  scores_N: jax.Array    # r(y) for each
  vocab_size: int
  length: int
  components_KxN: Optional[jax.Array] = None  # r = Σ_k r_k, when the score has parts (GDPO)


def toy_reward_parts(tokens_BxT, target_token: int = 2):
  """The toy score's two parts, `[2, B]`: the share of target tokens, and 1 when the first
  and last tokens match."""
  hits_B = jnp.mean((tokens_BxT == target_token).astype(jnp.float32), axis=1)
  return jnp.stack([hits_B, (tokens_BxT[:, 0] == tokens_BxT[:, -1]).astype(jnp.float32)])


def toy_reward(tokens_BxT, target_token: int = 2):
  """The toy score of the lab, the demo and the exact tests, `[B]`:

      r(y) = (1/T) Σ_t 1[y_t = target] + 1[y_0 = y_{T−1}]

  (the share of target tokens, plus 1 when the first and last tokens match)."""
  return jnp.sum(toy_reward_parts(tokens_BxT, target_token), axis=0)


def _problem(scores_fn, vocab_size, length, seed, scale, parts_fn=None) -> Problem:
  seqs_NxT = tabular.all_sequences(vocab_size, length)
  theta = tabular.init_params(jax.random.PRNGKey(seed), vocab_size, length, scale=scale)
  parts = None if parts_fn is None else parts_fn(seqs_NxT)
  return Problem(theta, seqs_NxT, scores_fn(seqs_NxT), vocab_size, length, parts)


def default_problem(vocab_size=3, length=4, seed=0, scale=0.7) -> Problem:
  """V = 3, T = 4 (81 sequences), θ ~ N(0, 0.7²); r = `toy_reward` with target token 2 (its two
  parts kept as components)."""
  return _problem(toy_reward, vocab_size, length, seed, scale, toy_reward_parts)


def greedy_index(p: Problem) -> int:
  """The index of the most likely token at every step (π_θ's greedy response) in the list."""
  return int(jnp.argmax(_greedy_mask(p)))


def _greedy_mask(p: Problem):
  """1 on the one listed sequence that is greedy at every position, else 0, `[N]`."""
  logits_NxTxV = tabular.logits(p.theta, p.seqs_NxT)
  greedy_NxT = jnp.argmax(logits_NxTxV, axis=-1) == p.seqs_NxT
  return jnp.all(greedy_NxT, axis=1).astype(jnp.float32)


def needle_problem(vocab_size=3, length=6, position=1, symbol=2, seed=0, scale=0.7) -> Problem:
  """Credit assignment: r(y) = 1[y_position = symbol]; the tokens after `position` do not
  matter, so the exact gradient on their parameters θ[t > position] is 0."""
  scores_fn = lambda seqs_NxT: (seqs_NxT[:, position] == symbol).astype(jnp.float32)
  return _problem(scores_fn, vocab_size, length, seed, scale)


def exact_gradient(p: Problem):
  """∇J = ∇θ Σ_y π_θ(y) r(y) by autodiff over the list, flattened `[D]`."""
  return jax.grad(tabular.exact_expectation)(p.theta, p.seqs_NxT, p.scores_N).reshape(-1)


def prefix_index(tokens_BxT, t: int, vocab_size: int):
  """Index of each row's prefix y_<t among the V^t prefixes of length t, `[B]`."""
  if t == 0:
    return jnp.zeros(tokens_BxT.shape[0], jnp.int32)
  return tabular.sequence_index(tokens_BxT[:, :t], vocab_size)


def sequence_probs(p: Problem):
  """π_θ(y) for every listed sequence, `[N]`."""
  return jnp.exp(tabular.sequence_log_prob(p.theta, p.seqs_NxT))


# Critics.

def exact_values(p: Problem):
  """V(y_<t) = Σ_{y ⊃ y_<t} π(y) r(y) / Σ_{y ⊃ y_<t} π(y) for every sequence and position,
  `[N, T]`."""
  prob_N = sequence_probs(p)
  V, T = p.vocab_size, p.length
  out = []
  for t in range(T):
    prefix_N = prefix_index(p.seqs_NxT, t, V)
    num = jax.ops.segment_sum(prob_N * p.scores_N, prefix_N, num_segments=V ** t)
    den = jax.ops.segment_sum(prob_N, prefix_N, num_segments=V ** t)
    out.append((num / den)[prefix_N])
  return jnp.stack(out, axis=1)


def noisy_values(p: Problem, noise: float, seed: int = 0):
  """A critic of controlled quality: exact V(y_<t) + noise·ε(y_<t), with ε ~ N(0, 1) drawn once
  per prefix (a function of the state only, as a learned critic is), `[N, T]`."""
  v_NxT = exact_values(p)
  if noise == 0:
    return v_NxT
  V, T = p.vocab_size, p.length
  cols = []
  for t in range(T):
    eps = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), t), (V ** t,))
    cols.append(eps[prefix_index(p.seqs_NxT, t, V)])
  return v_NxT + noise * jnp.stack(cols, axis=1)


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
    prefix_M = prefix_index(tokens_MxT, t, V)
    sums = jax.ops.segment_sum(returns_M, prefix_M, num_segments=V ** t)
    counts = jax.ops.segment_sum(jnp.ones_like(returns_M), prefix_M, num_segments=V ** t)
    fit = jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), fallback)
    cols.append(fit[prefix_index(p.seqs_NxT, t, V)])
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
  v_NxT = exact_values(p)
  next_NxT = jnp.concatenate([v_NxT[:, 1:], p.scores_N[:, None]], axis=1)
  return next_NxT - v_NxT
