"""Per-token log-probabilities and entropies from logits, stable in float32 for any logits dtype.

    log π(y_t | y_<t) = x_t[y_t] / τ − logsumexp_v(x_t[v] / τ)
    H_t = −Σ_v p_t[v] log p_t[v],  p_t = softmax(x_t / τ)

`x_t` are the logits that predict token t (the caller aligns them: logits at position t − 1 of
the model's input predict token t) and τ is the sampling temperature, so that behaviour
log-probs from the sampler and the trainer's log-probs come from the same distribution.

With `chunk_size=C` the vocabulary is processed C entries at a time under `lax.scan`, with an
online log-sum-exp forward and a hand-written backward pass, so a float32 `[B, T, V]` array is
never materialised in either direction: the largest float32 temporaries are `[B, T, C]`, and the
only `[B, T, V]` array the backward pass writes is the cotangent of the logits, in their dtype.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from pg.core import _checks


def _check(fn, logits_BxTxV, tokens_BxT, chunk_size):
  _checks.rank(fn, "logits_BxTxV", logits_BxTxV, 3)
  _checks.shape(fn, "tokens_BxT", tokens_BxT, logits_BxTxV.shape[:2], "`logits_BxTxV`[:2]")
  _checks.integer(fn, "tokens_BxT", tokens_BxT)
  if chunk_size is not None:
    if (isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
        or chunk_size < 1):
      raise ValueError(f"{fn}: `chunk_size` must be a positive int or None, got {chunk_size!r}.")


def _dense(logits_BxTxV, tokens_BxT, inv_temp):
  x_BxTxV = logits_BxTxV.astype(jnp.float32) * inv_temp
  logp_all_BxTxV = jax.nn.log_softmax(x_BxTxV, axis=-1)
  logp_BxT = jnp.take_along_axis(logp_all_BxTxV, tokens_BxT[..., None], axis=-1)[..., 0]
  entropy_BxT = -jnp.sum(jnp.exp(logp_all_BxTxV) * logp_all_BxTxV, axis=-1)
  return logp_BxT, entropy_BxT


def _chunks(V, C):
  """(n, rem): n full chunks of C for the scan, then a static remainder of rem entries."""
  n = V // C
  return n, V - n * C


def _storage_dtype(dtype):
  """The dtype chunks are sliced and written in: same-width uint for sub-32-bit floats."""
  dtype = jnp.dtype(dtype)
  return jnp.dtype(f"uint{8 * dtype.itemsize}") if dtype.itemsize < 4 else dtype


def _chunk_at(logits_BxTxV, start, size):
  """C vocabulary entries from `start`, in the logits' dtype.

  Sub-32-bit floats are sliced as unsigned ints of the same width and bitcast back: XLA's CPU
  backend otherwise upcasts the whole bf16 `[B, T, V]` array to float32 before the loop to run
  the dynamic slice, which is the very array chunking exists to avoid. (With the bitcast, CPU
  still copies the logits once, in their own dtype.)
  """
  dtype, store = jnp.dtype(logits_BxTxV.dtype), _storage_dtype(logits_BxTxV.dtype)
  if store == dtype:
    return jax.lax.dynamic_slice_in_dim(logits_BxTxV, start, size, axis=-1)
  as_uint = jax.lax.bitcast_convert_type(logits_BxTxV, store)
  chunk = jax.lax.dynamic_slice_in_dim(as_uint, start, size, axis=-1)
  return jax.lax.bitcast_convert_type(chunk, dtype)


def _fold_init(B, T):
  zeros = jnp.zeros((B, T), jnp.float32)
  return (jnp.full((B, T), -jnp.inf, jnp.float32), zeros, zeros, zeros)


def _fold(carry, x_BxTxC, start, tokens_BxT, inv_temp):
  """One vocabulary chunk of the online log-sum-exp. The carry holds, per token, the running
  max m, Σ e^{x−m}, Σ e^{x−m}·x and the target token's logit."""
  m_BxT, s_BxT, sx_BxT, tgt_BxT = carry
  x_BxTxC = x_BxTxC.astype(jnp.float32) * inv_temp
  m_new = jnp.maximum(m_BxT, jnp.max(x_BxTxC, axis=-1))
  scale = jnp.exp(m_BxT - m_new)
  e_BxTxC = jnp.exp(x_BxTxC - m_new[..., None])
  ids = start + jnp.arange(x_BxTxC.shape[-1])
  hit_BxTxC = jnp.where(ids == tokens_BxT[..., None], x_BxTxC, 0.0)
  return (m_new, s_BxT * scale + jnp.sum(e_BxTxC, axis=-1),
          sx_BxT * scale + jnp.sum(e_BxTxC * x_BxTxC, axis=-1),
          tgt_BxT + jnp.sum(hit_BxTxC, axis=-1))


def _fold_finish(carry):
  """(lse, target logit, Σp·x) from the folded carry."""
  m_BxT, s_BxT, sx_BxT, tgt_BxT = carry
  return m_BxT + jnp.log(s_BxT), tgt_BxT, sx_BxT / s_BxT


def _online_stats(logits_BxTxV, tokens_BxT, inv_temp, C):
  """Online log-sum-exp over vocabulary chunks: returns (lse, target logit, Σp·x) per token."""
  B, T, V = logits_BxTxV.shape
  n, rem = _chunks(V, C)
  carry = _fold_init(B, T)
  if n:
    def body(carry, i):
      start = i * C
      return _fold(carry, _chunk_at(logits_BxTxV, start, C), start, tokens_BxT, inv_temp), None
    carry, _ = jax.lax.scan(body, carry, jnp.arange(n))
  if rem:
    carry = _fold(carry, logits_BxTxV[..., n * C:], n * C, tokens_BxT, inv_temp)
  return _fold_finish(carry)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _chunked(logits_BxTxV, tokens_BxT, inv_temp, C):
  return _chunked_fwd(logits_BxTxV, tokens_BxT, inv_temp, C)[0]


def _chunked_fwd(logits_BxTxV, tokens_BxT, inv_temp, C):
  lse_BxT, tgt_BxT, mean_x_BxT = _online_stats(logits_BxTxV, tokens_BxT, inv_temp, C)
  logp_BxT = tgt_BxT - lse_BxT
  entropy_BxT = lse_BxT - mean_x_BxT
  res = (logits_BxTxV, tokens_BxT, inv_temp, lse_BxT, entropy_BxT)
  return (logp_BxT, entropy_BxT), res


def _chunked_bwd(C, res, cotangents):
  """d logp/dx'_v = 1[v = y] − p_v;  d H/dx'_v = −p_v (log p_v + H);  x' = x / τ."""
  logits_BxTxV, tokens_BxT, inv_temp, lse_BxT, entropy_BxT = res
  g_logp_BxT, g_ent_BxT = cotangents
  V = logits_BxTxV.shape[-1]
  n, rem = _chunks(V, C)

  def grad_chunk(x_BxTxC, start):
    x_BxTxC = x_BxTxC.astype(jnp.float32)
    xs_BxTxC = x_BxTxC * inv_temp
    logp_BxTxC = xs_BxTxC - lse_BxT[..., None]
    p_BxTxC = jnp.exp(logp_BxTxC)
    ids = start + jnp.arange(x_BxTxC.shape[-1])
    onehot_BxTxC = (ids == tokens_BxT[..., None]).astype(jnp.float32)
    gxs_BxTxC = (g_logp_BxT[..., None] * (onehot_BxTxC - p_BxTxC)
                 - g_ent_BxT[..., None] * p_BxTxC * (logp_BxTxC + entropy_BxT[..., None]))
    g_inv_temp = jnp.sum(gxs_BxTxC * x_BxTxC)
    return (gxs_BxTxC * inv_temp).astype(logits_BxTxV.dtype), g_inv_temp

  # Sub-32-bit gradients are written as same-width uints (see `_chunk_at`): a bf16
  # dynamic_update_slice makes XLA's CPU backend convert the whole buffer to float32 and back
  # on every chunk.
  dtype, store = jnp.dtype(logits_BxTxV.dtype), _storage_dtype(logits_BxTxV.dtype)
  to_store = (lambda g: jax.lax.bitcast_convert_type(g.astype(dtype), store)) \
      if store != dtype else (lambda g: g.astype(dtype))
  g_logits = jnp.zeros(logits_BxTxV.shape, store)
  g_inv_temp = jnp.zeros((), jnp.float32)
  if n:
    def body(carry, i):
      g_logits, g_inv_temp = carry
      start = i * C
      g_chunk, g_t = grad_chunk(_chunk_at(logits_BxTxV, start, C), start)
      g_logits = jax.lax.dynamic_update_slice_in_dim(g_logits, to_store(g_chunk), start, axis=-1)
      return (g_logits, g_inv_temp + g_t), None
    (g_logits, g_inv_temp), _ = jax.lax.scan(body, (g_logits, g_inv_temp), jnp.arange(n))
  if rem:
    g_chunk, g_t = grad_chunk(logits_BxTxV[..., n * C:], n * C)
    g_logits = g_logits.at[..., n * C:].set(to_store(g_chunk))
    g_inv_temp = g_inv_temp + g_t
  if store != dtype:
    g_logits = jax.lax.bitcast_convert_type(g_logits, dtype)
  zero_tokens = jnp.zeros(tokens_BxT.shape, jax.dtypes.float0)
  return g_logits, zero_tokens, jnp.asarray(g_inv_temp, jnp.result_type(inv_temp))


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


def token_log_probs_and_entropy(logits_BxTxV, tokens_BxT, *, temperature=1.0,
                                chunk_size: int | None = None):
  """Per-token log π(y_t | y_<t) and entropy H_t, both float32 `[B, T]`.

  Args:
    logits_BxTxV: logits x_t predicting token t, for t in [0, T), any float dtype.
    tokens_BxT: integer token ids y_t, t in [0, T).
    temperature: τ > 0 (a scalar, may be traced); the distribution is softmax(x / τ).
    chunk_size: None for the dense path; an int C to process the vocabulary C entries at a
      time (V need not be a multiple of C) so that float32 `[B, T, V]` is never built.
  Returns:
    (logp_BxT, entropy_BxT), float32.
  """
  _check("token_log_probs_and_entropy", logits_BxTxV, tokens_BxT, chunk_size)
  _checks.in_range("token_log_probs_and_entropy", "temperature", temperature, 0.0, float("inf"),
                   lo_open=True, hi_open=True)
  inv_temp = 1.0 / jnp.asarray(temperature, jnp.float32)
  if chunk_size is None or chunk_size >= logits_BxTxV.shape[-1]:
    return _dense(logits_BxTxV, tokens_BxT, inv_temp)
  return _chunked(logits_BxTxV, tokens_BxT, inv_temp, int(chunk_size))


def token_log_probs(logits_BxTxV, tokens_BxT, *, temperature=1.0, chunk_size=None):
  """Per-token log π(y_t | y_<t), float32 `[B, T]` (see `token_log_probs_and_entropy`)."""
  return token_log_probs_and_entropy(
      logits_BxTxV, tokens_BxT, temperature=temperature, chunk_size=chunk_size)[0]


def token_entropy(logits_BxTxV, *, temperature=1.0, chunk_size=None):
  """Per-token entropy H_t = −Σ_v p_t[v] log p_t[v] of softmax(x_t / τ), float32 `[B, T]`."""
  _checks.rank("token_entropy", "logits_BxTxV", logits_BxTxV, 3)
  dummy_BxT = jnp.zeros(logits_BxTxV.shape[:2], jnp.int32)
  return token_log_probs_and_entropy(
      logits_BxTxV, dummy_BxT, temperature=temperature, chunk_size=chunk_size)[1]


def sequence_log_probs(logp_BxT, mask_BxT):
  """log π(y) = Σ_t m_t log π(y_t | y_<t), float32 `[B]`: masked tokens contribute nothing."""
  _checks.rank("sequence_log_probs", "logp_BxT", logp_BxT, 2)
  _checks.same_shape("sequence_log_probs", {"logp_BxT": logp_BxT, "mask_BxT": mask_BxT})
  return jnp.sum(logp_BxT.astype(jnp.float32) * mask_BxT, axis=-1)


def head_log_probs_and_entropy(h_BxTxD, kernel_DxV, bias_V, tokens_BxT, *, temperature=1.0,
                               chunk_size: int | None = None, compute_dtype=None):
  """Per-token log-probs and entropies straight from hidden states and the LM head.

  x_t = h_t W + b; then as `token_log_probs_and_entropy`. With `chunk_size=C` the logits
  themselves are never built: a `lax.scan` over vocabulary chunks computes h W[:, chunk] + b and
  folds it into an online log-sum-exp, and each chunk is rematerialised in the backward pass
  (`jax.checkpoint`), so neither the logits `[B, T, V]` nor their float32 copy exist at once.

  Args:
    h_BxTxD: hidden states that predict tokens t in [0, T).
    kernel_DxV, bias_V: the LM head (a Dense layer's kernel and bias).
    tokens_BxT: integer tokens.
    temperature: τ > 0; chunk_size: None (dense) or C; compute_dtype: the head's matmul dtype
      (default: the hidden states' dtype), as the model's own Dense layer would use.
  Returns:
    (logp_BxT, entropy_BxT), float32.
  """
  fn = "head_log_probs_and_entropy"
  _checks.rank(fn, "h_BxTxD", h_BxTxD, 3)
  _checks.rank(fn, "kernel_DxV", kernel_DxV, 2)
  _checks.shape(fn, "kernel_DxV", kernel_DxV, (h_BxTxD.shape[-1], kernel_DxV.shape[1]),
                "`h_BxTxD`[-1]")
  _checks.shape(fn, "bias_V", bias_V, kernel_DxV.shape[1:], "`kernel_DxV`[1]")
  _checks.shape(fn, "tokens_BxT", tokens_BxT, h_BxTxD.shape[:2], "`h_BxTxD`[:2]")
  _checks.integer(fn, "tokens_BxT", tokens_BxT)
  _checks.in_range(fn, "temperature", temperature, 0.0, float("inf"), lo_open=True,
                   hi_open=True)
  dtype = compute_dtype or h_BxTxD.dtype
  V = kernel_DxV.shape[1]

  # Closed over in float32, cast to the compute dtype inside each chunk: the gradient w.r.t. h
  # then sums the chunks' contributions in float32, not bf16.
  h32_BxTxD = h_BxTxD.astype(jnp.float32)

  def logits(kernel, bias):
    return jnp.einsum("btd,dv->btv", h32_BxTxD.astype(dtype), kernel.astype(dtype)) + \
        bias.astype(dtype)

  if chunk_size is None or chunk_size >= V:
    x_BxTxV = jnp.einsum("btd,dv->btv", h_BxTxD.astype(dtype), kernel_DxV.astype(dtype))
    return token_log_probs_and_entropy(x_BxTxV + bias_V.astype(dtype), tokens_BxT,
                                       temperature=temperature)
  _check(fn, jnp.zeros((1, 1, 1)), jnp.zeros((1, 1), jnp.int32), chunk_size)
  C = int(chunk_size)
  inv_temp = 1.0 / jnp.asarray(temperature, jnp.float32)
  B, T, _ = h_BxTxD.shape
  n, rem = _chunks(V, C)

  @jax.checkpoint
  def body(carry, i):
    start = i * C
    kernel = jax.lax.dynamic_slice_in_dim(kernel_DxV, start, C, axis=1)
    bias = jax.lax.dynamic_slice_in_dim(bias_V, start, C, axis=0)
    return _fold(carry, logits(kernel, bias), start, tokens_BxT, inv_temp), None

  carry = _fold_init(B, T)
  if n:
    carry, _ = jax.lax.scan(body, carry, jnp.arange(n))
  if rem:
    carry = _fold(carry, logits(kernel_DxV[:, n * C:], bias_V[n * C:]), n * C, tokens_BxT,
                  inv_temp)
  lse_BxT, tgt_BxT, mean_x_BxT = _fold_finish(carry)
  return tgt_BxT - lse_BxT, lse_BxT - mean_x_BxT
