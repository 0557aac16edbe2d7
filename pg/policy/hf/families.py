"""Hugging Face model families: one mapping table each, from checkpoint names to `pg` params.

A row of a table is `(hf_name, pg_path, transposed)`: `{i}` stands for the layer index,
`pg_path` is a "/"-joined path under `params["params"]`, and `transposed` says the checkpoint
stores the matrix as torch's Linear does (`[out, in]`; flax's kernel is `[in, out]`). A
family's `options(hf_config)` turns its `config.json` into `config.model` options of the
"llama" policy and `hf_config(cfg)` turns a policy's config back into one.
"""

from __future__ import annotations

from typing import NamedTuple

from pg.policy import rope

Row = tuple  # (hf_name, pg_path, transposed)

LLAMA_TABLE: tuple[Row, ...] = (
    ("model.embed_tokens.weight", "trunk/embed/embedding", False),
    ("model.layers.{i}.input_layernorm.weight", "trunk/layer_{i}/attn_norm/scale", False),
    ("model.layers.{i}.self_attn.q_proj.weight", "trunk/layer_{i}/q/kernel", True),
    ("model.layers.{i}.self_attn.k_proj.weight", "trunk/layer_{i}/k/kernel", True),
    ("model.layers.{i}.self_attn.v_proj.weight", "trunk/layer_{i}/v/kernel", True),
    ("model.layers.{i}.self_attn.o_proj.weight", "trunk/layer_{i}/o/kernel", True),
    ("model.layers.{i}.post_attention_layernorm.weight", "trunk/layer_{i}/mlp_norm/scale", False),
    ("model.layers.{i}.mlp.gate_proj.weight", "trunk/layer_{i}/gate/kernel", True),
    ("model.layers.{i}.mlp.up_proj.weight", "trunk/layer_{i}/up/kernel", True),
    ("model.layers.{i}.mlp.down_proj.weight", "trunk/layer_{i}/down/kernel", True),
    ("model.norm.weight", "trunk/final_norm/scale", False),
    ("lm_head.weight", "lm_head/kernel", True),
)
QWEN2_TABLE = LLAMA_TABLE + (
    ("model.layers.{i}.self_attn.q_proj.bias", "trunk/layer_{i}/q/bias", False),
    ("model.layers.{i}.self_attn.k_proj.bias", "trunk/layer_{i}/k/bias", False),
    ("model.layers.{i}.self_attn.v_proj.bias", "trunk/layer_{i}/v/bias", False),
)
QWEN3_TABLE = LLAMA_TABLE + (
    ("model.layers.{i}.self_attn.q_norm.weight", "trunk/layer_{i}/q_norm/scale", False),
    ("model.layers.{i}.self_attn.k_norm.weight", "trunk/layer_{i}/k_norm/scale", False),
)
# Buffers some checkpoints carry that are recomputed here, not parameters.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class Family(NamedTuple):
  model_type: str
  table: tuple
  qkv_bias: bool
  qk_norm: bool
  tie_default: bool            # transformers' default for tie_word_embeddings
  defaults: tuple = ()         # (field, value): transformers' defaults for fields a config omits


FAMILIES = {
    "LlamaForCausalLM": Family("llama", LLAMA_TABLE, False, False, False,
                               (("max_position_embeddings", 2048),)),
    "MistralForCausalLM": Family("mistral", LLAMA_TABLE, False, False, False,
                                 (("max_position_embeddings", 131072), ("sliding_window", 4096))),
    "Qwen2ForCausalLM": Family("qwen2", QWEN2_TABLE, True, False, False,
                               (("max_position_embeddings", 32768), ("num_key_value_heads", 32),
                                ("sliding_window", 4096), ("max_window_layers", 28))),
    "Qwen3ForCausalLM": Family("qwen3", QWEN3_TABLE, False, True, False,
                               (("max_position_embeddings", 32768), ("num_key_value_heads", 32),
                                ("head_dim", 128), ("sliding_window", 4096),
                                ("max_window_layers", 28))),
}
REQUIRED_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads",
                   "intermediate_size", "vocab_size")
ARCHITECTURE_FIELDS = ("num_layers", "d_model", "num_heads", "num_kv_heads", "head_dim",
                       "mlp_dim", "rope_theta", "rope_scaling", "rms_eps", "tie_embeddings",
                       "qkv_bias", "qk_norm")


def family_of(hf_config: dict, where: str) -> tuple[str, Family]:
  """The checkpoint's architecture and its family; an unsupported one is named and refused."""
  names = hf_config.get("architectures") or []
  for name in names:
    if name in FAMILIES:
      return name, FAMILIES[name]
  found = names or hf_config.get("model_type")
  raise ValueError(f"{where}: architecture {found!r} is not supported; supported: "
                   f"{', '.join(FAMILIES)}.")


def _rope(hf_config: dict):
  """(rope_theta, rope_scaling or None) from transformers 4's `rope_theta`/`rope_scaling` or
  transformers 5's `rope_parameters`."""
  params = dict(hf_config.get("rope_parameters") or {})
  scaling = dict(hf_config.get("rope_scaling") or {}) or params
  theta = hf_config.get("rope_theta", params.get("rope_theta", 10000.0))
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  if kind == "default":
    return float(theta), None
  keep = ("rope_type", "factor", "low_freq_factor", "high_freq_factor",
          "original_max_position_embeddings")
  return float(theta), {k: scaling[k] for k in keep if k in scaling} | {"rope_type": kind}


def options(hf_config: dict, where: str) -> dict:
  """The "llama" policy's architecture options (and `vocab_size`, `max_position_embeddings`)
  from a `config.json`; a feature the family supports but `pg` does not is refused, named."""
  arch, family = family_of(hf_config, where)
  missing = [k for k in REQUIRED_FIELDS if not isinstance(hf_config.get(k), int)]
  if missing:
    raise ValueError(f"{where}: config.json lacks integer field(s) {missing} that {arch} needs.")
  for flag in ("attention_bias", "mlp_bias"):
    if hf_config.get(flag) and family.model_type in ("llama", "mistral", "qwen3"):
      raise ValueError(f"{where}: {arch} with {flag}=true is not supported.")
  if hf_config.get("hidden_act", "silu") not in ("silu", "swish"):
    raise ValueError(f"{where}: {arch} with hidden_act={hf_config['hidden_act']!r} is not "
                     f"supported (only 'silu').")
  get = lambda k, default=None: hf_config[k] if k in hf_config else dict(family.defaults).get(
      k, default)
  theta, scaling = _rope(hf_config)
  try:
    rope.check_scaling(scaling)
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from None
  heads = int(hf_config["num_attention_heads"])
  d_model = int(hf_config["hidden_size"])
  head_dim = get("head_dim") or d_model // heads
  return {
      "num_layers": int(hf_config["num_hidden_layers"]), "d_model": d_model,
      "num_heads": heads, "num_kv_heads": int(get("num_key_value_heads") or heads),
      "head_dim": None if head_dim == d_model // heads and not d_model % heads else head_dim,
      "mlp_dim": int(hf_config["intermediate_size"]), "rope_theta": theta,
      "rope_scaling": scaling, "rms_eps": float(hf_config.get("rms_norm_eps", 1e-6)),
      "tie_embeddings": bool(hf_config.get("tie_word_embeddings", family.tie_default)),
      "qkv_bias": family.qkv_bias, "qk_norm": family.qk_norm,
      "vocab_size": int(hf_config["vocab_size"]),
      "max_position_embeddings": int(get("max_position_embeddings") or 0) or None,
      "sliding_window": _sliding_window(hf_config, family, get),
  }


def _sliding_window(hf_config: dict, family: Family, get):
  """The window transformers applies to some layer (None: full attention everywhere)."""
  window = get("sliding_window")
  if family.model_type == "mistral" or not window:
    return int(window) if window else None
  if not hf_config.get("use_sliding_window", False):
    return None
  layer_types = hf_config.get("layer_types") or [
      "sliding_attention" if i >= get("max_window_layers") else "full_attention"
      for i in range(int(hf_config["num_hidden_layers"]))]
  return int(window) if "sliding_attention" in layer_types else None


def hf_config(cfg, architecture: str = "LlamaForCausalLM", extra: dict | None = None) -> dict:
  """A `config.json` for the policy config `cfg` (`pg.policy.llama.LlamaConfig`) as
  `architecture`, which `transformers` and vLLM load; `extra` adds fields (token ids)."""
  family = FAMILIES[architecture]
  if (cfg.qkv_bias, cfg.qk_norm) != (family.qkv_bias, family.qk_norm):
    raise ValueError(f"save: a model with qkv_bias={cfg.qkv_bias}, qk_norm={cfg.qk_norm} is not "
                     f"a {architecture}; pick the family that has them.")
  out = {
      "architectures": [architecture], "model_type": family.model_type,
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
      "intermediate_size": cfg.mlp_dim, "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
      "head_dim": cfg.dim_per_head, "hidden_act": "silu", "rms_norm_eps": cfg.rms_eps,
      "rope_theta": cfg.rope_theta, "max_position_embeddings": cfg.max_len,
      "tie_word_embeddings": cfg.tie_embeddings, "dtype": "float32", "torch_dtype": "float32",
      "attention_dropout": 0.0,
  }
  if cfg.rope_scaling:
    out["rope_scaling"] = dict(cfg.rope_scaling)
  if family.model_type in ("llama",):
    out.update(attention_bias=False, mlp_bias=False)
  if family.model_type in ("mistral", "qwen2", "qwen3"):
    out.update(sliding_window=None, use_sliding_window=False)
  return out | dict(extra or {})


def expand(table, num_layers: int, tied: bool) -> dict:
  """{hf_name: (pg_path, transposed)} for a model of `num_layers` layers; no `lm_head` row when
  the embeddings are tied."""
  out = {}
  for hf, path, transposed in table:
    if tied and hf == "lm_head.weight":
      continue
    for i in range(num_layers) if "{i}" in hf else [None]:
      out[hf.format(i=i)] = (path.format(i=i), transposed)
  return out

