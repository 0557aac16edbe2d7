"""A tabular autoregressive policy over a sequence space small enough to enumerate.

    π_θ(y) = Π_t softmax(θ[t, y_{t−1}])[y_t],   y_{−1} = BOS (index V),  y ∈ {0..V−1}^T

With V^T sequences listable (V = 3, T = 4: 81), J(θ) = Σ_y π_θ(y) r(y) and its gradient are
exact by autodiff, which is what the estimator tests and the demo compare sampled estimates to.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from pg.core.logprobs import sequence_log_probs, token_log_probs


def all_sequences(vocab_size: int, length: int):
  """Every sequence in {0..V−1}^T, lexicographic, int32 `[V^T, T]`."""
  if vocab_size ** length > 10 ** 6:
    raise ValueError(f"all_sequences: V^T = {vocab_size}^{length} is too many to enumerate.")
  return jnp.asarray(list(itertools.product(range(vocab_size), repeat=length)), jnp.int32)


def init_params(key, vocab_size: int, length: int, scale: float = 1.0):
  """θ `[T, V + 1, V]`: logits of token t given the previous token (row V is BOS)."""
  return scale * jax.random.normal(key, (length, vocab_size + 1, vocab_size), jnp.float32)


def logits(theta_TxCxV, tokens_BxT):
  """x_t = θ[t, y_{t−1}], `[B, T, V]`: the logits that predict each token of `tokens_BxT`."""
  T, C, _ = theta_TxCxV.shape
  bos_B1 = jnp.full((tokens_BxT.shape[0], 1), C - 1, tokens_BxT.dtype)
  prev_BxT = jnp.concatenate([bos_B1, tokens_BxT[:, :-1]], axis=1)
  return theta_TxCxV[jnp.arange(T)[None, :], prev_BxT]


def sequence_log_prob(theta_TxCxV, tokens_BxT):
  """log π_θ(y) for each row, `[B]`."""
  logp_BxT = token_log_probs(logits(theta_TxCxV, tokens_BxT), tokens_BxT)
  return sequence_log_probs(logp_BxT, jnp.ones(tokens_BxT.shape, jnp.float32))


def sample(key, theta_TxCxV, batch_size: int, temperature=1.0):
  """Ancestral sampling of `batch_size` sequences, int32 `[B, T]`."""
  T, C, _ = theta_TxCxV.shape

  def step(prev_B, t_and_key):
    t, k = t_and_key
    y_B = jax.random.categorical(k, theta_TxCxV[t, prev_B] / temperature).astype(jnp.int32)
    return y_B, y_B

  keys = jax.random.split(key, T)
  _, y_TxB = jax.lax.scan(step, jnp.full((batch_size,), C - 1, jnp.int32),
                          (jnp.arange(T), keys))
  return y_TxB.T


def exact_expectation(theta_TxCxV, all_seqs_NxT, values_N):
  """E_{y∼π_θ}[f(y)] = Σ_y π_θ(y) f(y) over every sequence (differentiable in θ)."""
  return jnp.sum(jnp.exp(sequence_log_prob(theta_TxCxV, all_seqs_NxT)) * values_N)


def sequence_index(tokens_BxT, vocab_size: int):
  """Row of each sequence in `all_sequences` (base-V digits), int32 `[B]`."""
  T = tokens_BxT.shape[1]
  weights_T = jnp.asarray(vocab_size ** np.arange(T - 1, -1, -1), jnp.int32)
  return jnp.sum(tokens_BxT * weights_T, axis=1)
