"""The Llama family ("llama"): Llama 2/3, Mistral, Qwen2, Qwen3 and SmolLM decoders (Flax linen).

    tokens_BxL → embed → num_layers × [RMSNorm → GQA attention with rotary positions
               → RMSNorm → SwiGLU MLP] → RMSNorm → logits_BxLxV (LM head, or the embedding
               transposed when tied) and values_BxL (critic: shared trunk or a separate one)

Per layer: q, k, v = x W_q, x W_k, x W_v (biases with `qkv_bias`, Qwen2), optionally RMSNorm
on each head's q and k (`qk_norm`, Qwen3), rotary positions (`pg.policy.rope`), H query heads
over K ≤ H key/value heads, o = attn W_o; the MLP is W_down(silu(x W_gate) ⊙ x W_up). Every
number follows Hugging Face's `modeling_llama.py` (checked against its fixtures within 1e-4).

Prompts of any length are left-padded: a prompt mask (1 on real tokens) is passed with them. A
row's pads are never attended and its rotary positions count from 0 at its first real token,
so each row gets the logits it would get alone. The decode cache keeps each row's first real
slot (`start_B`); keys and values per layer are `[B, K, S, Dh]` blocks along the positions
(`pg.policy.sampler.cache_blocks`), heads before positions as in `pg.policy.gpt`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from pg.core.logprobs import head_log_probs_and_entropy, token_log_probs_and_entropy
from pg.policy import rope
from pg.policy.attention import attend_after_prefix, attend_cached, attend_masked
from pg.policy.base import FlaxPolicy, TokenFlops, register_policy
from pg.policy.partition import FSDP

VALUE_HEADS = ("none", "shared", "separate")
DECODE = "decode"  # a variable collection the sampler adds for its loop (`decode_params`)
# FSDP splits every matrix along its model dimension D (`pg.policy.partition`); norm scales
# and biases stay whole. First match wins.
PARTITION_RULES = (
    (r"embed/embedding$", (None, FSDP)),              # [V, D]
    (r"lm_head/kernel$", (FSDP, None)),               # [D, V]
    (r"/(q|k|v|gate|up)/kernel$", (FSDP, None)),      # [D, H·Dh], [D, K·Dh], [D, F]
    (r"/(o|down)/kernel$", (None, FSDP)),             # [H·Dh, D], [F, D]
    (r"value_out/kernel$", (FSDP, None)),             # [D, 1]
)


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  vocab_size: int
  max_len: int
  num_layers: int = 2
  d_model: int = 64
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: Optional[int] = None   # default d_model // num_heads
  mlp_dim: int = 176
  rope_theta: float = 10000.0
  rope_scaling: Optional[dict] = None
  rms_eps: float = 1e-5
  tie_embeddings: bool = True
  qkv_bias: bool = False
  qk_norm: bool = False
  value_head: str = "none"
  dtype: str = "float32"           # compute dtype; parameters stay float32

  def __post_init__(self):
    for name in ("vocab_size", "max_len", "num_layers", "d_model", "num_heads", "num_kv_heads",
                 "mlp_dim"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"model.{name} must be a positive int, got {value!r}.")
    if self.head_dim is None and self.d_model % self.num_heads:
      raise ValueError(f"model.d_model ({self.d_model}) must be a multiple of model.num_heads "
                       f"({self.num_heads}), or set model.head_dim.")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"model.num_heads ({self.num_heads}) must be a multiple of "
                       f"model.num_kv_heads ({self.num_kv_heads}).")
    if self.dim_per_head % 2:
      raise ValueError(f"model.head_dim must be even (rotary pairs), got {self.dim_per_head}.")
    if self.value_head not in VALUE_HEADS:
      raise ValueError(f"model.value_head must be one of {VALUE_HEADS}, got {self.value_head!r}.")
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"model.dtype must be 'float32' or 'bfloat16', got {self.dtype!r}.")
    rope.check_scaling(self.rope_scaling)

  @property
  def dim_per_head(self) -> int:
    return self.head_dim or self.d_model // self.num_heads

  def theta(self):
    return rope.inverse_frequencies(self.dim_per_head, self.rope_theta,
                                    dict(self.rope_scaling) if self.rope_scaling else None)


class RMSNorm(nn.Module):
  """x / √(mean(x²) + ε) · scale, in float32 (as transformers' LlamaRMSNorm), cast to dtype."""
  eps: float
  dtype: str

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (y * scale).astype(self.dtype)


def init_cache(cfg: LlamaConfig, batch_size: int, block_sizes=None):
  """`{"start_B": zeros [B] int32, "layers": per layer, blocks of (k, v) [B, K, S_b, Dh]}`;
  `block_sizes` (static, summing to max_len) defaults to one block."""
  block_sizes = (cfg.max_len,) if block_sizes is None else tuple(block_sizes)
  if sum(block_sizes) != cfg.max_len or min(block_sizes) < 1:
    raise ValueError(f"init_cache: block sizes {block_sizes} must be positive and sum to "
                     f"model.max_len = {cfg.max_len}.")
  zeros = lambda n: jnp.zeros((batch_size, cfg.num_kv_heads, n, cfg.dim_per_head), cfg.dtype)
  return {"start_B": jnp.zeros((batch_size,), jnp.int32),
          "layers": [tuple((zeros(n), zeros(n)) for n in block_sizes)
                     for _ in range(cfg.num_layers)]}


def positions_from_mask(mask_BxL):
  """Rotary positions of a left-padded row: 0 at its first real token (pads get 0)."""
  return jnp.maximum(jnp.cumsum(mask_BxL > 0, axis=1) - 1, 0).astype(jnp.int32)


class Layer(nn.Module):
  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x_BxLxD, positions_BxL, allowed_BxLxS=None, kv=None, pos=0, write_block=0,
               start_B=None, prefix=None, prefix_mask_NxP=None):
    """One decoder layer. Modes, by argument:

    - `allowed_BxLxS` (a full sequence, S = L): attention where allowed; returns (k, v)
      `[B, L, K, Dh]`, which the grouped mode takes as `prefix`;
    - `kv` (this layer's cache blocks): decoding at slots pos..pos+L−1 in block `write_block`,
      rows' first real slots `start_B`; returns the updated blocks;
    - `prefix` (k, v of the group's prompts, `[N, P, K, Dh]`, B = N·G, pads marked 0 in
      `prefix_mask_NxP`): tokens after the prompt shared by G consecutive rows; returns None.
    """
    cfg = self.cfg
    B, L, D = x_BxLxD.shape
    H, K, Dh = cfg.num_heads, cfg.num_kv_heads, cfg.dim_per_head
    dense = lambda n, name, bias=False: nn.Dense(n, use_bias=bias, dtype=cfg.dtype, name=name)
    norm = lambda name: RMSNorm(cfg.rms_eps, cfg.dtype, name=name)
    h = norm("attn_norm")(x_BxLxD)
    q = dense(H * Dh, "q", cfg.qkv_bias)(h).reshape(B, L, H, Dh)
    k = dense(K * Dh, "k", cfg.qkv_bias)(h).reshape(B, L, K, Dh)
    v = dense(K * Dh, "v", cfg.qkv_bias)(h).reshape(B, L, K, Dh)
    if cfg.qk_norm:
      q, k = norm("q_norm")(q), norm("k_norm")(k)
    theta = cfg.theta()
    q, k = rope.apply_rope(q, positions_BxL, theta), rope.apply_rope(k, positions_BxL, theta)
    new_kv = None
    if prefix is not None:
      out = attend_after_prefix(q, k, v, *prefix, prefix_mask_NxP=prefix_mask_NxP)
    elif kv is None:
      out = attend_masked(q, k, v, allowed_BxLxS)
      new_kv = (k, v)
    else:
      out, new_kv = attend_cached(q, k, v, kv, pos, write_block, start_B)
    x_BxLxD = x_BxLxD + dense(D, "o")(out.reshape(B, L, H * Dh))
    h = norm("mlp_norm")(x_BxLxD)
    h = dense(D, "down")(nn.silu(dense(cfg.mlp_dim, "gate")(h)) * dense(cfg.mlp_dim, "up")(h))
    return x_BxLxD + h, new_kv


class Trunk(nn.Module):
  """Embedding, layers and the final RMSNorm: hidden states `[B, L, D]`."""
  cfg: LlamaConfig

  def setup(self):
    cfg = self.cfg
    self.embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.dtype,
                          embedding_init=nn.initializers.normal(0.02), name="embed")
    self.layers = [Layer(cfg, name=f"layer_{i}") for i in range(cfg.num_layers)]
    self.final_norm = RMSNorm(cfg.rms_eps, cfg.dtype, name="final_norm")

  def __call__(self, tokens_BxL, mask_BxL=None):
    """A full sequence (training); `mask_BxL` marks real tokens of left-padded rows."""
    L = tokens_BxL.shape[1]
    causal_LxL = jnp.arange(L)[None, :] <= jnp.arange(L)[:, None]
    if mask_BxL is None:
      positions = jnp.broadcast_to(jnp.arange(L), tokens_BxL.shape)
      allowed = jnp.broadcast_to(causal_LxL, (tokens_BxL.shape[0], L, L))
    else:
      positions = positions_from_mask(mask_BxL)
      allowed = causal_LxL[None] & (mask_BxL > 0)[:, None, :]
    x = self.embed(tokens_BxL)
    for layer in self.layers:
      x, _ = layer(x, positions, allowed)
    return self.final_norm(x)

  def grouped(self, prompts_NxP, tokens_BxL, prompt_mask_NxP=None):
    """Hidden states of tokens_BxL that follow the prompt shared by G = B / N consecutive rows
    (at slots P..P+L−1), and of the prompts `[N, P, D]`."""
    (N, P), (B, L) = prompts_NxP.shape, tokens_BxL.shape
    mask = jnp.ones((N, P), jnp.float32) if prompt_mask_NxP is None else prompt_mask_NxP
    positions_NxP = positions_from_mask(mask)
    lengths_B = jnp.repeat(jnp.sum(mask > 0, axis=1).astype(jnp.int32), B // N)
    positions_BxL = lengths_B[:, None] + jnp.arange(L)[None, :]
    allowed = (jnp.arange(P)[None, :] <= jnp.arange(P)[:, None])[None] & (mask > 0)[:, None, :]
    xp, x = self.embed(prompts_NxP), self.embed(tokens_BxL)
    for layer in self.layers:
      xp, prefix = layer(xp, positions_NxP, allowed)
      x, _ = layer(x, positions_BxL, prefix=prefix, prefix_mask_NxP=prompt_mask_NxP)
    return self.final_norm(x), self.final_norm(xp)

  def decode(self, tokens_BxL, pos, cache, write_block=0, mask_BxL=None):
    """Decoding at slots pos..pos+L−1; `mask_BxL` (the prefill of left-padded prompts, pos = 0)
    sets each row's first real slot."""
    start_B = cache["start_B"]
    if mask_BxL is not None:
      start_B = (tokens_BxL.shape[1] - jnp.sum(mask_BxL > 0, axis=1)).astype(jnp.int32)
    slots = pos + jnp.arange(tokens_BxL.shape[1])
    positions = jnp.maximum(slots[None, :] - start_B[:, None], 0)
    x = self.embed(tokens_BxL)
    layers = []
    for layer, kv in zip(self.layers, cache["layers"]):
      x, kv = layer(x, positions, kv=kv, pos=pos, write_block=write_block, start_B=start_B)
      layers.append(kv)
    return self.final_norm(x), {"start_B": start_B, "layers": layers}

  def logits(self, h_BxLxD):
    """The tied LM head: hidden states times the embedding transposed."""
    return self.embed.attend(h_BxLxD)


class PolicyValue(nn.Module):
  """The policy's logits and, by config, values from a head on its trunk or on its own."""
  cfg: LlamaConfig

  def setup(self):
    cfg = self.cfg
    self.trunk = Trunk(cfg)
    if not cfg.tie_embeddings:
      self.lm_head = nn.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype, name="lm_head")
    if cfg.value_head == "separate":
      self.critic_trunk = Trunk(cfg)
    if cfg.value_head != "none":
      self.value_out = nn.Dense(1, dtype=jnp.float32, name="value_out")

  def head(self, h_BxLxD):
    if self.has_variable(DECODE, "head_DxV"):  # the sampler's copy (`decode_params`)
      dtype = self.cfg.dtype
      return h_BxLxD.astype(dtype) @ jnp.asarray(self.get_variable(DECODE, "head_DxV"), dtype)
    return self.trunk.logits(h_BxLxD) if self.cfg.tie_embeddings else self.lm_head(h_BxLxD)

  def _values(self, h, critic_hidden):
    if self.cfg.value_head == "shared":
      return self.value_out(h.astype(jnp.float32))[..., 0]
    if self.cfg.value_head == "separate":
      return self.value_out(critic_hidden().astype(jnp.float32))[..., 0]
    return None

  def hidden_and_values(self, tokens_BxL, mask_BxL=None):
    h = self.trunk(tokens_BxL, mask_BxL)
    values = self._values(h, lambda: self.critic_trunk(tokens_BxL, mask_BxL))
    if self.is_initializing():
      self.head(h)
    return h, values

  def __call__(self, tokens_BxL, mask_BxL=None):
    h, values = self.hidden_and_values(tokens_BxL, mask_BxL)
    return self.head(h), values

  def grouped_response_hidden_and_values(self, prompts_NxP, responses_BxT, prompt_mask_NxP=None):
    """Hidden states and values at the positions that predict each response token, each prompt
    run once for its G = B / N rows."""
    G = responses_BxT.shape[0] // prompts_NxP.shape[0]
    inputs = responses_BxT[:, :-1]

    def hidden(trunk):
      h_BxRxD, hp_NxPxD = trunk.grouped(prompts_NxP, inputs, prompt_mask_NxP)
      return jnp.concatenate([jnp.repeat(hp_NxPxD[:, -1:], G, axis=0), h_BxRxD], axis=1)
    h = hidden(self.trunk)
    return h, self._values(h, lambda: hidden(self.critic_trunk))

  def decode(self, tokens_BxL, pos, cache, write_block=0, mask_BxL=None):
    h, cache = self.trunk.decode(tokens_BxL, pos, cache, write_block, mask_BxL)
    return self.head(h), cache


@dataclasses.dataclass(frozen=True)
class LlamaPolicy(FlaxPolicy):
  """`PolicyValue` behind the `pg.policy.base.Policy` interface. `checkpoint`: a Hugging Face
  model directory or GGUF file whose weights `pretrained_params` reads (None: random init)."""
  cfg: LlamaConfig
  logprob_chunk_size: Optional[int] = None
  masked_ids: tuple = ()
  checkpoint: Optional[str] = None
  lora_alpha: Optional[float] = None   # LoRA scale α (pg.policy.lora); None: no adapters
  shares_prompts = True
  takes_prompt_mask = True
  module = PolicyValue
  partition_rules = PARTITION_RULES

  def init(self, key):
    tokens = jnp.zeros((1, min(self.cfg.max_len, 8)), jnp.int32)
    return PolicyValue(self.cfg).init(key, tokens)

  def _head_kernel(self, params):
    p = params["params"]
    if self.cfg.tie_embeddings:
      return p["trunk"]["embed"]["embedding"].T
    return p["lm_head"]["kernel"]

  def response_stats(self, params, prompts_NxP, tokens_BxT, temperature, prompt_mask_NxP=None):
    """Log-probs, entropies and values `[B, T]` of the responses after their (left-padded,
    `prompt_mask_NxP`) prompts; with N < B each prompt is run once for its G = B / N rows."""
    N, P = prompts_NxP.shape
    if N != tokens_BxT.shape[0]:
      h, values = self._apply(params, prompts_NxP, tokens_BxT, prompt_mask_NxP,
                              method=PolicyValue.grouped_response_hidden_and_values)
    else:
      full = jnp.concatenate([prompts_NxP, tokens_BxT], axis=1)
      mask = None if prompt_mask_NxP is None else jnp.concatenate(
          [prompt_mask_NxP, jnp.ones(tokens_BxT.shape, prompt_mask_NxP.dtype)], axis=1)
      h, values = self._apply(params, full, mask, method=PolicyValue.hidden_and_values)
      h = h[:, P - 1:-1]
      values = None if values is None else values[:, P - 1:-1]
    if self.logprob_chunk_size is None:
      logits = self._masked(self._apply(params, h, method=PolicyValue.head))
      logp, entropy = token_log_probs_and_entropy(logits, tokens_BxT, temperature=temperature)
    else:
      bias = self._masked(jnp.zeros((self.cfg.vocab_size,), jnp.float32))
      logp, entropy = head_log_probs_and_entropy(
          h, self._head_kernel(params), bias, tokens_BxT, temperature=temperature,
          chunk_size=self.logprob_chunk_size, compute_dtype=self.cfg.dtype)
    return logp, entropy, values

  def sequence_outputs(self, params, tokens_BxL, mask_BxL=None):
    """Logits `[B, L, V]` and values `[B, L]` (or None); `mask_BxL` marks left-padded rows'
    real tokens."""
    logits, values = self._apply(params, tokens_BxL, mask_BxL, method=PolicyValue.__call__)
    return self._masked(logits), values

  def init_cache(self, batch_size: int, block_sizes=None):
    return init_cache(self.cfg, batch_size, block_sizes)

  def decode_params(self, params):
    """`params` for the sampler's loop: with tied embeddings, plus the LM head laid out as
    `[D, V]` once, so no decode step transposes the `[V, D]` embedding again (on CPU XLA wrote
    that 113 MB copy at every step at SmolLM2's size)."""
    if not self.cfg.tie_embeddings:
      return params
    return {**params, DECODE: {"head_DxV": params["params"]["trunk"]["embed"]["embedding"].T}}

  def decode(self, params, tokens_BxL, pos, cache, block: int = 0, mask_BxL=None):
    logits, cache = self._apply(params, tokens_BxL, pos, cache, block, mask_BxL,
                                method=PolicyValue.decode)
    return self._masked(logits), cache

  def token_flops(self, attended: int) -> TokenFlops:
    """Per layer 2·(D·H·Dh + 2·D·K·Dh + H·Dh·D + 3·D·F) for the projections and the MLP, plus
    4·H·Dh·a for QKᵀ and AV over `a` attended positions; the LM head 2·D·V."""
    c = self.cfg
    H, K, Dh, D = c.num_heads, c.num_kv_heads, c.dim_per_head, c.d_model
    trunk = c.num_layers * (2 * (2 * D * H * Dh + 2 * D * K * Dh + 3 * D * c.mlp_dim)
                            + 4 * H * Dh * attended)
    return TokenFlops(trunk=float(trunk), head=float(2 * D * c.vocab_size),
                      critic=float(trunk if c.value_head == "separate" else 0))

  def warm_start(self, params, source_params):
    """`params` with every top-level module `source_params` has taken from it; a separate
    critic trunk that the source lacks starts from the source's policy trunk."""
    fresh, source = params["params"], dict(source_params["params"])
    if "critic_trunk" in fresh and "critic_trunk" not in source and "trunk" in source:
      source["critic_trunk"] = source["trunk"]
    return {"params": {**fresh, **{k: v for k, v in source.items() if k in fresh}}}

  def pretrained_params(self):
    """The checkpoint's weights as this policy's parameter tree (host arrays), None without
    one; `warm_start` puts them into freshly initialised params (a new value head stays)."""
    if self.checkpoint is None:
      return None
    from pg.policy.hf import checkpoint  # pylint: disable=import-outside-toplevel
    return checkpoint.load_params(self.checkpoint, self)


OPTIONS = {"init_from": None, "num_layers": 2, "d_model": 64, "num_heads": 4,
           "num_kv_heads": 2, "head_dim": None, "mlp_dim": 176, "rope_theta": 10000.0,
           "rope_scaling": None, "rms_eps": 1e-5, "tie_embeddings": True, "qkv_bias": False,
           "qk_norm": False, "value_head": "none", "dtype": "float32"}


@register_policy("llama", options=OPTIONS)
def build(options, *, vocab_size, max_len, logprob_chunk_size=None, masked_ids=()):
  """The policy from `config.model`; with `init_from` (a Hugging Face model directory or a GGUF
  file) the architecture comes from the checkpoint (`pg.policy.hf.checkpoint`)."""
  options = dict(options)
  path = options.pop("init_from")
  if path:
    from pg.policy.hf import checkpoint  # pylint: disable=import-outside-toplevel
    options = checkpoint.architecture_options(path, options, OPTIONS, vocab_size=vocab_size,
                                              max_len=max_len)
    vocab_size = options.pop("vocab_size")
  cfg = LlamaConfig(vocab_size=vocab_size, max_len=max_len, **options)
  return LlamaPolicy(cfg, logprob_chunk_size, tuple(masked_ids), path or None)
