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


def attend_after_prefix(q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh, k_NxPxKxDh, v_NxPxKxDh,
                        block: Optional[int] = None, prefix_mask_NxP=None):
  """Attention of L tokens that follow a prompt shared by G = B / N consecutive rows.

  Each query attends to all P prompt positions of its group (keys `k_NxPxKxDh`, computed once
  per group; with `prefix_mask_NxP`, only to those marked 1: a left-padded prompt's pads are
  never attended) and causally to its own row's L tokens; softmax over both, scaled by 1/√Dh as
  `jax.nn.dot_product_attention` does. K ≤ H key/value heads: query head h reads key head
  h // (H / K) (grouped-query attention; K = H is multi-head). The prompt's keys are never
  copied G times: the group axis is an einsum axis, so the backward pass sums the G rows'
  cotangents into them.

  With L > `block`, queries go in blocks of `block`: block j reads only the keys up to its own
  last position (causality: about half the scores of L × L), and each block is rematerialised
  in the backward pass, so no `[B, H, L, L]` scores are ever held (1024-token responses at
  B = 256 asked XLA for 40 GB without blocks).
  """
  B, L, H, Dh = q_BxLxHxDh.shape
  N, P, K = k_NxPxKxDh.shape[:3]
  assert B % N == 0, f"batch {B} is not a whole number of groups of the prompt batch {N}"
  assert H % K == 0, f"{H} query heads are not a whole number of groups of {K} key heads"
  G, R = B // N, H // K
  block = ATTENTION_BLOCK if block is None else block
  q_NxGxLxKxRxDh = q_BxLxHxDh.reshape(N, G, L, K, R, Dh)
  group = lambda x: x.reshape(N, G, x.shape[1], K, Dh)
  k_NxGxLxKxDh, v_NxGxLxKxDh = group(k_BxLxKxDh), group(v_BxLxKxDh)
  prefix_ok = None if prefix_mask_NxP is None else (
      prefix_mask_NxP > 0)[:, None, None, None, None, :]

  def attend(q, k_self, v_self, start):
    """Queries at own positions start..start+Q−1 against the prompt and own keys 0..S−1."""
    Q, S = q.shape[2], k_self.shape[2]
    scores_prompt = jnp.einsum("nglkrd,npkd->ngkrlp", q, k_NxPxKxDh).astype(jnp.float32)
    if prefix_ok is not None:
      scores_prompt = jnp.where(prefix_ok, scores_prompt, -1e30)
    scores_self = jnp.einsum("nglkrd,ngskd->ngkrls", q, k_self)
    causal_QxS = jnp.arange(S)[None, :] <= start + jnp.arange(Q)[:, None]
    scores_self = jnp.where(causal_QxS, scores_self.astype(jnp.float32), -1e30)
    scores = jnp.concatenate([scores_prompt, scores_self], axis=-1)
    attn = jax.nn.softmax(scores / jnp.sqrt(Dh).astype(jnp.float32), axis=-1).astype(q.dtype)
    return (jnp.einsum("ngkrlp,npkd->nglkrd", attn[..., :P], v_NxPxKxDh)
            + jnp.einsum("ngkrls,ngskd->nglkrd", attn[..., P:], v_self))

  if L <= block:
    out = attend(q_NxGxLxKxRxDh, k_NxGxLxKxDh, v_NxGxLxKxDh, 0)
  else:
    blocked = jax.checkpoint(attend, static_argnums=(3,))
    out = jnp.concatenate([
        blocked(q_NxGxLxKxRxDh[:, :, s:s + block], k_NxGxLxKxDh[:, :, :s + block],
                v_NxGxLxKxDh[:, :, :s + block], s)
        for s in range(0, L, block)], axis=2)
  return out.reshape(B, L, H, Dh)


def attend_masked(q_BxLxHxDh, k_BxSxKxDh, v_BxSxKxDh, allowed_BxLxS):
  """Softmax attention of L queries over S keys where `allowed_BxLxS` (bool) is True, with
  grouped-query heads (H = K·R; query head h reads key head h // R); scaled by 1/√Dh, scores
  and softmax in float32. A query with no allowed key gets a uniform average (finite: a
  left pad's output, which nothing reads)."""
  B, L, H, Dh = q_BxLxHxDh.shape
  K = k_BxSxKxDh.shape[2]
  q_BxLxKxRxDh = q_BxLxHxDh.reshape(B, L, K, H // K, Dh)
  scores = jnp.einsum("blkrd,bskd->bkrls", q_BxLxKxRxDh, k_BxSxKxDh).astype(jnp.float32)
  scores = jnp.where(allowed_BxLxS[:, None, None], scores, -1e30)
  attn = jax.nn.softmax(scores / jnp.sqrt(Dh).astype(jnp.float32), axis=-1)
  out = jnp.einsum("bkrls,bskd->blkrd", attn.astype(q_BxLxHxDh.dtype), v_BxSxKxDh)
  return out.reshape(B, L, H, Dh)


def attend_cached(q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh, blocks, pos, j, start_B):
  """Decoding at slots pos..pos+L−1 (in cache block j, static) with grouped-query heads:
  attends to the cache's slots start_B..pos−1 (each row's first real slot `start_B`: a
  left-padded prompt's pads are never read; blocks 0..j, read before this call's write) and
  causally to its own L tokens. `blocks`: (k, v) pairs `[B, K, S_b, Dh]` along the positions.
  Returns the output `[B, L, H, Dh]` and the blocks with this call's keys and values written
  into block j (in place: the write is the block's last use)."""
  B, L, H, Dh = q_BxLxHxDh.shape
  K = k_BxLxKxDh.shape[2]
  sizes = [k.shape[2] for k, _ in blocks]
  first = [sum(sizes[:b]) for b in range(len(sizes))]
  q_BxKxRxLxDh = q_BxLxHxDh.reshape(B, L, K, H // K, Dh).transpose(0, 2, 3, 1, 4)
  k_BxKxLxDh, v_BxKxLxDh = (x.transpose(0, 2, 1, 3) for x in (k_BxLxKxDh, v_BxLxKxDh))
  slot_L = pos + jnp.arange(L)
  own = jnp.einsum("bkrld,bksd->bkrls", q_BxKxRxLxDh, k_BxKxLxDh).astype(jnp.float32)
  own_ok = (slot_L[None, :] <= slot_L[:, None])[None] & (slot_L[None, None, :]
                                                       >= start_B[:, None, None])
  parts = []
  for b in range(j + 1):
    s = jnp.einsum("bkrld,bksd->bkrls", q_BxKxRxLxDh, blocks[b][0]).astype(jnp.float32)
    slot_S = first[b] + jnp.arange(sizes[b])
    ok_BxS = slot_S[None, :] >= start_B[:, None]
    if b == j:
      ok_BxS &= (slot_S < pos)[None, :]
    parts.append(jnp.where(ok_BxS[:, None, None, None, :], s, -1e30))
  parts.append(jnp.where(own_ok[:, None, None], own, -1e30))
  scores = jnp.concatenate(parts, axis=-1) / jnp.sqrt(Dh).astype(jnp.float32)
  attn = jax.nn.softmax(scores, axis=-1).astype(q_BxLxHxDh.dtype)
  end = first[j] + sizes[j]
  out = jnp.einsum("bkrls,bksd->bkrld", attn[..., end:], v_BxKxLxDh)
  for b in range(j + 1):
    out += jnp.einsum("bkrls,bksd->bkrld", attn[..., first[b]:first[b] + sizes[b]],
                      blocks[b][1])
  out_BxLxHxDh = out.transpose(0, 3, 1, 2, 4).reshape(B, L, H, Dh)
  zero = jnp.zeros((), jnp.int32)
  starts = (zero, zero, jnp.asarray(pos - first[j], jnp.int32), zero)
  k_j, v_j = blocks[j]
  new = (update_slice(k_j, k_BxKxLxDh.astype(k_j.dtype), starts),
         update_slice(v_j, v_BxKxLxDh.astype(v_j.dtype), starts))
  return out_BxLxHxDh, blocks[:j] + (new,) + blocks[j + 1:]
