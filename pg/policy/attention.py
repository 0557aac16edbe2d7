"""Attention pieces any architecture can use: a cache write that stays in place under `vmap`, and
attention of responses that follow a prompt shared by a group of rows (query-blocked for long
responses)."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


@jax.custom_batching.custom_vmap
def update_slice(operand, update, starts):
  """`lax.dynamic_update_slice(operand, update, starts)`, kept a slice update under `vmap`.

  JAX batches a dynamic_update_slice as a scatter, which XLA lowers to a read-select-write that
  copies the whole operand: under the seed `vmap` every decode step copied every layer's cache.
  With unbatched start indices the batched update is still a slice update (at offset 0 on the new
  leading axis), done in place.
  """
  return jax.lax.dynamic_update_slice(operand, update, starts)


@update_slice.def_vmap
def _update_slice_vmap(axis_size, in_batched, operand, update, starts):
  operand_batched, update_batched, starts_batched = in_batched
  if any(starts_batched):  # per-example offsets: a genuine scatter
    axes = (0 if operand_batched else None, 0 if update_batched else None,
            tuple(0 if b else None for b in starts_batched))
    return jax.vmap(jax.lax.dynamic_update_slice, in_axes=axes)(operand, update, starts), True
  if not operand_batched:
    operand = jnp.broadcast_to(operand, (axis_size, *operand.shape))
  if not update_batched:
    update = jnp.broadcast_to(update, (axis_size, *update.shape))
  return update_slice(operand, update, (jnp.zeros((), jnp.int32), *starts)), True


# Responses longer than this attend in blocks of this many queries (see attend_after_prefix).
ATTENTION_BLOCK = 128


def attend_after_prefix(q_BxLxHxDh, k_BxLxHxDh, v_BxLxHxDh, k_NxPxHxDh, v_NxPxHxDh,
                        block: Optional[int] = None):
  """Attention of L tokens that follow a prompt shared by G = B / N consecutive rows.

  Each query attends to all P prompt positions of its group (keys `k_NxPxHxDh`, computed once
  per group) and causally to its own row's L tokens; softmax over both, scaled by 1/√Dh as
  `jax.nn.dot_product_attention` does. The prompt's keys are never copied G times: the group
  axis is an einsum axis, so the backward pass sums the G rows' cotangents into them.

  With L > `block`, queries go in blocks of `block`: block j reads only the keys up to its own
  last position (causality: about half the scores of L × L), and each block is rematerialised
  in the backward pass, so no `[B, H, L, L]` scores are ever held (1024-token responses at
  B = 256 asked XLA for 40 GB without blocks).
  """
  B, L, H, Dh = q_BxLxHxDh.shape
  N, P = k_NxPxHxDh.shape[:2]
  assert B % N == 0, f"batch {B} is not a whole number of groups of the prompt batch {N}"
  G = B // N
  block = ATTENTION_BLOCK if block is None else block
  group = lambda x: x.reshape(N, G, x.shape[1], H, Dh)
  q_NxGxLxHxDh, k_NxGxLxHxDh, v_NxGxLxHxDh = group(q_BxLxHxDh), group(k_BxLxHxDh), group(v_BxLxHxDh)

  def attend(q, k_self, v_self, start):
    """Queries at own positions start..start+Q−1 against the prompt and own keys 0..K−1."""
    Q, K = q.shape[2], k_self.shape[2]
    scores_prompt = jnp.einsum("nglhd,nphd->nghlp", q, k_NxPxHxDh)
    scores_self = jnp.einsum("nglhd,ngshd->nghls", q, k_self)
    causal_QxK = jnp.arange(K)[None, :] <= start + jnp.arange(Q)[:, None]
    scores_self = jnp.where(causal_QxK, scores_self.astype(jnp.float32), -1e30)
    scores = jnp.concatenate([scores_prompt.astype(jnp.float32), scores_self], axis=-1)
    attn = jax.nn.softmax(scores / jnp.sqrt(Dh).astype(jnp.float32), axis=-1).astype(q.dtype)
    return (jnp.einsum("nghlp,nphd->nglhd", attn[..., :P], v_NxPxHxDh)
            + jnp.einsum("nghls,ngshd->nglhd", attn[..., P:], v_self))

  if L <= block:
    out_NxGxLxHxDh = attend(q_NxGxLxHxDh, k_NxGxLxHxDh, v_NxGxLxHxDh, 0)
  else:
    blocked = jax.checkpoint(attend, static_argnums=(3,))
    out_NxGxLxHxDh = jnp.concatenate([
        blocked(q_NxGxLxHxDh[:, :, s:s + block], k_NxGxLxHxDh[:, :, :s + block],
                v_NxGxLxHxDh[:, :, :s + block], s)
        for s in range(0, L, block)], axis=2)
  return out_NxGxLxHxDh.reshape(B, L, H, Dh)
