"""A decoder-only transformer policy (Flax linen) with an optional value head and a KV cache.

    tokens_BxL → embed + learned positions → num_layers × [LN → causal MHA → LN → MLP] → LN
               → logits_BxLxV (policy), values_BxL (critic: shared trunk or a separate one)

`apply` is pure: params are a plain pytree, so a batch of models (one per seed) is a `vmap`.
Decoding uses an explicit cache (a list of (k, v) per layer, `[B, H, S, Dh]` each, S = max_len):
a call with `cache` and `pos` writes the new keys and values at positions pos..pos+L−1 and attends
to every cached position ≤ its own. Heads come before positions so that a decode step's write is
a contiguous in-place update and the attention reads the cache without transposing it (with
`[B, S, H, Dh]`, XLA copied all four caches at every step: 45 of the sampler's 103 ms at the
benchmark's sizes).

A group's G samples share their prompt. `PolicyValue.grouped_response_hidden_and_values` runs
the prompt through the trunk once per group (N = B / G rows) and the responses after it, each
response attending to its group's prompt keys and values: the same numbers as the full forward
over prompt ⧺ response, with the prompt's share of the work divided by G.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

VALUE_HEADS = ("none", "shared", "separate")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  max_len: int
  num_layers: int = 2
  d_model: int = 64
  num_heads: int = 4
  mlp_ratio: int = 4
  value_head: str = "shared"  # "none" | "shared" (value on the policy trunk) | "separate"
  dtype: str = "float32"      # compute dtype; parameters stay float32

  def __post_init__(self):
    for name in ("vocab_size", "max_len", "num_layers", "d_model", "num_heads", "mlp_ratio"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}.")
    if self.d_model % self.num_heads:
      raise ValueError(f"model.d_model ({self.d_model}) must be a multiple of model.num_heads "
                       f"({self.num_heads}).")
    if self.value_head not in VALUE_HEADS:
      raise ValueError(f"model.value_head must be one of {VALUE_HEADS}, got {self.value_head!r}.")
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"model.dtype must be 'float32' or 'bfloat16', got {self.dtype!r}.")

  @property
  def head_dim(self):
    return self.d_model // self.num_heads


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


def init_cache(cfg: ModelConfig, batch_size: int, block_sizes=None):
  """Zeros for every layer's keys and values: a list over layers of blocks along the positions,
  each block a (k, v) pair of `[B, H, S_b, Dh]`; `block_sizes` (static, summing to max_len)
  defaults to one block. A decode step that writes into block j reads blocks 0..j only."""
  block_sizes = (cfg.max_len,) if block_sizes is None else tuple(block_sizes)
  if sum(block_sizes) != cfg.max_len or min(block_sizes) < 1:
    raise ValueError(f"init_cache: block sizes {block_sizes} must be positive and sum to "
                     f"model.max_len = {cfg.max_len}.")
  zeros = lambda n: jnp.zeros((batch_size, cfg.num_heads, n, cfg.head_dim), cfg.dtype)
  return [tuple((zeros(n), zeros(n)) for n in block_sizes) for _ in range(cfg.num_layers)]


class Block(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD, pos, kv=None, prefix=None, write_block=0):
    """One block. Modes, by argument:

    - neither: a full sequence (causal self-attention); returns this block's (k, v),
      `[B, L, H, Dh]` each, which the grouped mode passes on as `prefix`;
    - `kv` (this layer's cache blocks, `init_cache`): decoding at positions pos..pos+L−1, which
      lie in block `write_block` (static); reads blocks 0..write_block, returns the updated
      blocks;
    - `prefix` (k, v of the group's prompt, `[N, P, H, Dh]`, B = N·G): tokens that follow the
      prompt shared by G consecutive rows; returns None.
    """
    cfg = self.cfg
    B, L, D = x_BxLxD.shape
    H, Dh = cfg.num_heads, cfg.head_dim
    dense = lambda n, name: nn.Dense(n, dtype=cfg.dtype, name=name)
    h = nn.LayerNorm(dtype=cfg.dtype, name="ln_attn")(x_BxLxD)
    qkv_BxLx3D = dense(3 * D, "qkv")(h)
    q_BxLxHxDh, k_BxLxHxDh, v_BxLxHxDh = jnp.split(qkv_BxLx3D.reshape(B, L, 3 * H, Dh), 3, axis=2)
    if prefix is not None:
      out_BxLxHxDh = attend_after_prefix(q_BxLxHxDh, k_BxLxHxDh, v_BxLxHxDh, *prefix)
      new_kv = None
    elif kv is None:  # full sequence (training): causal self-attention, nothing else
      out_BxLxHxDh = jax.nn.dot_product_attention(q_BxLxHxDh, k_BxLxHxDh, v_BxLxHxDh,
                                                  is_causal=True)
      new_kv = (k_BxLxHxDh, v_BxLxHxDh)
    else:  # decoding: the cache's positions before `pos` (blocks 0..write_block, read before
      # this call's write), then the block's own keys, causally masked among themselves
      j = write_block
      sizes = [k.shape[2] for k, _ in kv]
      first = [sum(sizes[:b]) for b in range(len(sizes))]  # each block's first position
      q_BxHxLxDh, k_BxHxLxDh, v_BxHxLxDh = (
          x.transpose(0, 2, 1, 3) for x in (q_BxLxHxDh, k_BxLxHxDh, v_BxLxHxDh))
      q_pos_L = pos + jnp.arange(L)
      scores_BxHxLxL = jnp.einsum("bhld,bhsd->bhls", q_BxHxLxDh, k_BxHxLxDh).astype(jnp.float32)
      scores_BxHxLxL = jnp.where(q_pos_L[None, :] <= q_pos_L[:, None], scores_BxHxLxL, -1e30)
      parts = []
      for b in range(j + 1):  # blocks before j are whole positions before pos: no mask
        s = jnp.einsum("bhld,bhsd->bhls", q_BxHxLxDh, kv[b][0]).astype(jnp.float32)
        parts.append(s if b < j else jnp.where(
            (first[j] + jnp.arange(sizes[j]) < pos)[None, :], s, -1e30))
      scores = jnp.concatenate(parts + [scores_BxHxLxL], axis=-1) / jnp.sqrt(Dh)
      attn = jax.nn.softmax(scores, axis=-1).astype(cfg.dtype)
      out_BxHxLxDh = jnp.einsum("bhls,bhsd->bhld", attn[..., first[j] + sizes[j]:], v_BxHxLxDh)
      for b in range(j + 1):
        out_BxHxLxDh += jnp.einsum("bhls,bhsd->bhld",
                                   attn[..., first[b]:first[b] + sizes[b]], kv[b][1])
      out_BxLxHxDh = out_BxHxLxDh.transpose(0, 2, 1, 3)
      # The write is the block's only use after the read above, so XLA can do it in place.
      zero = jnp.zeros((), jnp.int32)
      starts = (zero, zero, jnp.asarray(pos - first[j], jnp.int32), zero)
      k_j, v_j = kv[j]
      new_kv = (kv[:j] + ((update_slice(k_j, k_BxHxLxDh.astype(k_j.dtype), starts),
                           update_slice(v_j, v_BxHxLxDh.astype(v_j.dtype), starts)),)
                + kv[j + 1:])
    x_BxLxD = x_BxLxD + dense(D, "attn_out")(out_BxLxHxDh.reshape(B, L, D))
    h = nn.LayerNorm(dtype=cfg.dtype, name="ln_mlp")(x_BxLxD)
    h = dense(D, "mlp_out")(nn.gelu(dense(cfg.mlp_ratio * D, "mlp_in")(h)))
    return x_BxLxD + h, new_kv


class Trunk(nn.Module):
  """Embeddings, blocks and the final LayerNorm: hidden states `[B, L, D]`."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens_BxL, pos=0, cache=None, prompt_NxP=None, write_block=0):
    """Hidden states `[B, L, D]` and a second output by mode: the updated cache (decoding with
    `cache`, writing into its block `write_block`), the prompt's hidden states `[N, P, D]`
    (with `prompt_NxP`: tokens_BxL follow the prompt shared by G = B / N consecutive rows, at
    positions P..P+L−1), else None."""
    cfg = self.cfg
    embed = nn.Embed(cfg.vocab_size, cfg.d_model, name="embed")
    pos_embed = nn.Embed(cfg.max_len, cfg.d_model, name="pos_embed")
    blocks = [Block(cfg, name=f"block_{i}") for i in range(cfg.num_layers)]
    ln_final = nn.LayerNorm(dtype=cfg.dtype, name="ln_final")
    embed_at = lambda tokens, start: (embed(tokens) + pos_embed(
        start + jnp.arange(tokens.shape[1]))[None]).astype(cfg.dtype)
    if prompt_NxP is not None:
      P = prompt_NxP.shape[1]
      xp, x = embed_at(prompt_NxP, 0), embed_at(tokens_BxL, P)
      for block in blocks:
        xp, prefix = block(xp, 0)
        x, _ = block(x, P, prefix=prefix)
      return ln_final(x), ln_final(xp)
    x = embed_at(tokens_BxL, pos)
    new_cache = []
    for i, block in enumerate(blocks):
      x, kv = block(x, pos, None if cache is None else cache[i], write_block=write_block)
      new_cache.append(kv)
    return ln_final(x), (None if cache is None else new_cache)


class PolicyValue(nn.Module):
  """The policy (logits) and, by config, a value head on the same trunk or on its own."""
  cfg: ModelConfig

  def setup(self):
    self.trunk = Trunk(self.cfg)
    self.lm_head = nn.Dense(self.cfg.vocab_size, dtype=self.cfg.dtype, name="lm_head")
    if self.cfg.value_head == "separate":
      self.critic_trunk = Trunk(self.cfg)
    if self.cfg.value_head != "none":
      self.value_out = nn.Dense(1, dtype=jnp.float32, name="value_out")

  def __call__(self, tokens_BxL):
    """Full forward (training): logits `[B, L, V]` and values `[B, L]` float32 (or None)."""
    h_BxLxD, values_BxL = self.hidden_and_values(tokens_BxL)
    return self.lm_head(h_BxLxD), values_BxL

  def hidden_and_values(self, tokens_BxL):
    """Final hidden states `[B, L, D]` (the LM head's input) and values, without the logits:
    `pg.head_log_probs_and_entropy` applies the head chunk by chunk."""
    h_BxLxD, values_BxL = self._hidden_and_values(lambda trunk: trunk(tokens_BxL)[0])
    if self.is_initializing():  # create the head's parameters too
      self.lm_head(h_BxLxD)
    return h_BxLxD, values_BxL

  def _hidden_and_values(self, hidden):
    """`hidden(trunk)` -> hidden states from the policy trunk, and values from the value head
    on them (shared) or on the critic trunk's (separate), or None."""
    h = hidden(self.trunk)
    values: Optional[jax.Array] = None
    if self.cfg.value_head == "shared":
      values = self.value_out(h.astype(jnp.float32))[..., 0]
    elif self.cfg.value_head == "separate":
      values = self.value_out(hidden(self.critic_trunk).astype(jnp.float32))[..., 0]
    return h, values

  def grouped_response_hidden_and_values(self, prompts_NxP, responses_BxT):
    """What `hidden_and_values` gives at the positions that predict each response token
    (P−1 .. P+T−2: hidden states `[B, T, D]`, values `[B, T]` or None), with each prompt run
    once for the G = B / N consecutive rows that share it."""
    N, B = prompts_NxP.shape[0], responses_BxT.shape[0]
    assert B % N == 0, f"{B} responses are not whole groups of the {N} prompts"
    G = B // N
    inputs_BxR = responses_BxT[:, :-1]  # the last token predicts nothing

    def hidden(trunk):
      h_BxRxD, hp_NxPxD = trunk(inputs_BxR, prompt_NxP=prompts_NxP)
      return jnp.concatenate([jnp.repeat(hp_NxPxD[:, -1:], G, axis=0), h_BxRxD], axis=1)
    return self._hidden_and_values(hidden)

  def head(self, h_BxTxD):
    """The LM head: logits from final hidden states."""
    return self.lm_head(h_BxTxD)

  def decode(self, tokens_BxL, pos, cache, write_block=0):
    """Policy logits for tokens at positions pos..pos+L−1, reading and writing the cache; the
    positions lie in cache block `write_block` (static), and later blocks are not read."""
    h_BxLxD, cache = self.trunk(tokens_BxL, pos, cache, write_block=write_block)
    return self.lm_head(h_BxLxD), cache


def init_params(cfg: ModelConfig, key):
  tokens = jnp.zeros((1, cfg.max_len), jnp.int32)
  return PolicyValue(cfg).init(key, tokens)
