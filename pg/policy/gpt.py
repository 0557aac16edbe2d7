"""The GPT-2-style policy ("gpt"): a decoder-only transformer (Flax linen) with an optional value head and a KV cache.

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

from pg.core.logprobs import head_log_probs_and_entropy, token_log_probs_and_entropy
from pg.policy.attention import attend_after_prefix, update_slice
from pg.policy.base import FlaxPolicy, TokenFlops, refuse_mask, register_policy
from pg.policy.partition import FSDP

# FSDP splits every matrix along its model dimension D (`pg.policy.partition`).
PARTITION_RULES = (
    (r"(pos_)?embed/embedding$", (None, FSDP)),       # [V, D], [max_len, D]
    (r"/(qkv|mlp_in|lm_head|value_out)/kernel$", (FSDP, None)),  # [D, 3D], [D, 4D], [D, V]
    (r"/(attn_out|mlp_out)/kernel$", (None, FSDP)),   # [D, D], [4D, D]
)

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


@dataclasses.dataclass(frozen=True)
class GPTPolicy(FlaxPolicy):
  """`PolicyValue` behind the `pg.policy.base.Policy` interface."""
  cfg: ModelConfig
  logprob_chunk_size: Optional[int] = None
  masked_ids: tuple = ()
  lora_alpha: Optional[float] = None   # LoRA scale α (pg.policy.lora); None: no adapters
  shares_prompts = True
  takes_prompt_mask = False
  module = PolicyValue
  partition_rules = PARTITION_RULES

  def init(self, key):
    return init_params(self.cfg, key)

  def response_stats(self, params, prompts_NxP, tokens_BxT, temperature, prompt_mask_NxP=None):
    """Log-probs, entropies and values `[B, T]` of the responses after their prompts (values
    None without a value head). With N < B prompts, each is run once for the G = B / N
    consecutive rows that follow it; with N = B, the full prompt ⧺ response row."""
    refuse_mask(self, prompt_mask_NxP, "response_stats")
    N, P = prompts_NxP.shape
    if N != tokens_BxT.shape[0]:
      h_BxTxD, values_BxT = self._apply(
          params, prompts_NxP, tokens_BxT,
          method=PolicyValue.grouped_response_hidden_and_values)
    else:
      full_BxL = jnp.concatenate([prompts_NxP, tokens_BxT], axis=1)
      h_BxLxD, values_BxL = self._apply(params, full_BxL, method=PolicyValue.hidden_and_values)
      h_BxTxD = h_BxLxD[:, P - 1:-1]  # the positions that predict each response token
      values_BxT = None if values_BxL is None else values_BxL[:, P - 1:-1]
    if self.logprob_chunk_size is None:
      logits_BxTxV = self._masked(self._apply(params, h_BxTxD, method=PolicyValue.head))
      logp_BxT, entropy_BxT = token_log_probs_and_entropy(logits_BxTxV, tokens_BxT,
                                                          temperature=temperature)
    else:  # the LM head applied chunk by chunk: no [B, T, V] logits at all
      head = params["params"]["lm_head"]
      logp_BxT, entropy_BxT = head_log_probs_and_entropy(
          h_BxTxD, head["kernel"], self._masked(head["bias"]), tokens_BxT,
          temperature=temperature, chunk_size=self.logprob_chunk_size,
          compute_dtype=self.cfg.dtype)
    return logp_BxT, entropy_BxT, values_BxT

  def sequence_outputs(self, params, tokens_BxL, mask_BxL=None):
    """Logits `[B, L, V]` at every position and values `[B, L]` (or None)."""
    refuse_mask(self, mask_BxL, "sequence_outputs")
    logits_BxLxV, values_BxL = self._apply(params, tokens_BxL, method=PolicyValue.__call__)
    return self._masked(logits_BxLxV), values_BxL

  def init_cache(self, batch_size: int, block_sizes=None):
    return init_cache(self.cfg, batch_size, block_sizes)

  def decode(self, params, tokens_BxL, pos, cache, block: int = 0, mask_BxL=None):
    refuse_mask(self, mask_BxL, "decode")
    logits_BxLxV, cache = self._apply(params, tokens_BxL, pos, cache, block,
                                      method=PolicyValue.decode)
    return self._masked(logits_BxLxV), cache

  def token_flops(self, attended: int) -> TokenFlops:
    """A token through the trunk: 2·L·(4 + 2r)·d² for the projections and the MLP (12d² per
    layer at r = 4), plus L·4·d·a for QKᵀ and AV over `a` attended positions; the LM head 2·d·V."""
    c = self.cfg
    trunk = 2 * c.num_layers * (4 + 2 * c.mlp_ratio) * c.d_model ** 2 + (
        c.num_layers * 4 * c.d_model * attended)
    return TokenFlops(trunk=float(trunk), head=float(2 * c.d_model * c.vocab_size),
                      critic=float(trunk if c.value_head == "separate" else 0))

  def warm_start(self, params, source_params):
    """`params` with every top-level module that `source_params` also has (the trunk) taken
    from it; the others (a fresh value head) stay as they are."""
    fresh = params["params"]
    return {"params": {**fresh, **{k: v for k, v in source_params["params"].items()
                                   if k in fresh}}}

  def pretrained_params(self):
    """None: this architecture has no checkpoint format of its own (`config.init_from` takes
    params that `pg.train.save_params` wrote)."""
    return None


OPTIONS = {"num_layers": 2, "d_model": 64, "num_heads": 4, "mlp_ratio": 4, "value_head": "none",
           "dtype": "float32"}


@register_policy("gpt", options=OPTIONS)
def build(options, *, vocab_size, max_len, logprob_chunk_size=None, masked_ids=()) -> GPTPolicy:
  return GPTPolicy(ModelConfig(vocab_size=vocab_size, max_len=max_len, **options),
                   logprob_chunk_size, tuple(masked_ids))
