"""Reading a llama.cpp GGUF file as the Hugging Face model directory it was converted from.

`read_gguf(path)` gives what that directory's `config.json` and safetensors would hold: a config
dict and float32 NumPy arrays under Hugging Face names, `[out, in]` as torch stores them. The
`gguf` package parses the memory-mapped file and dequantises every type it knows (F32, F16,
BF16, Q8_0, Q4_0, Q4_1, the K-quants, ...), so only the float32 output takes memory.

llama.cpp's converter reorders the rows of each head of W_q and W_k so that its rotary embedding
can rotate adjacent pairs (x₂ᵢ, x₂ᵢ₊₁); Hugging Face's Llama rotates the halves (xᵢ, xᵢ₊d/2)
(`rotate_half`). `unpermute_rotary` undoes that reorder, as transformers' own GGUF loader does
(`LlamaTensorProcessor` in `modeling_gguf_pytorch_utils.py`), with the KV head count for W_k.
"""

import os

import numpy as np

SUPPORTED_ARCHITECTURES = ("llama",)

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {  # blk.{i}.<key> -> model.layers.{i}.<value>
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def hf_name(gguf_name: str) -> str | None:
  """The Hugging Face name of a llama GGUF tensor, or None when it has none.

  `blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`; `token_embd.weight` →
  `model.embed_tokens.weight`; `output.weight` (absent when the embeddings are tied) →
  `lm_head.weight`.
  """
  if gguf_name in _GLOBAL_NAMES:
    return _GLOBAL_NAMES[gguf_name]
  parts = gguf_name.split(".", 2)
  if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_NAMES:
    return f"model.layers.{int(parts[1])}.{_LAYER_NAMES[parts[2]]}"
  return None


def unpermute_rotary(w_OxI: np.ndarray, num_heads: int) -> np.ndarray:
  """Undoes llama.cpp's per-head row interleave of W_q (num_heads = query heads) or W_k (KV heads).

  Within each head of d rows, the file's row 2i + j is the Hugging Face row i + j·d/2
  (i < d/2, j ∈ {0, 1}): llama.cpp's `permute` is `reshape(H, 2, d/2, I).swapaxes(1, 2)`, so
  its inverse is `reshape(H, d/2, 2, I).swapaxes(1, 2)`.
  """
  O = w_OxI.shape[0]
  w = w_OxI.reshape(num_heads, O // num_heads // 2, 2, *w_OxI.shape[1:])
  return w.swapaxes(1, 2).reshape(w_OxI.shape)


def _float32_value(x: float) -> float:
  """The shortest decimal that rounds to the stored float32 (1e-05, not 9.999999747e-06)."""
  return float(str(np.float32(x)))


def _rope_scaling(meta: dict, arch: str) -> dict | None:
  """A config.json `rope_scaling` from the `{arch}.rope.scaling.*` keys; None when unscaled."""
  kind = meta.get(f"{arch}.rope.scaling.type")
  factor = meta.get(f"{arch}.rope.scaling.factor", meta.get(f"{arch}.rope.scale_linear"))
  if kind is None and factor is not None:
    kind = "linear"  # older files: only `rope.scale_linear`
  if kind in (None, "none") or factor is None:
    return None
  scaling = {"rope_type": kind, "factor": _float32_value(factor)}
  original = meta.get(f"{arch}.rope.scaling.original_context_length")
  if original is not None:
    scaling["original_max_position_embeddings"] = int(original)
  return scaling


def llama_config(meta: dict, shapes: dict) -> dict:
  """The transformers `config.json` of a llama GGUF file.

  Args:
    meta: the file's metadata, key → value (`llama.block_count` → 30, ...).
    shapes: GGUF tensor name → its shape in NumPy order (`token_embd.weight` → (V, D)).

  Returns:
    A dict like a Hugging Face LlamaForCausalLM `config.json` (rope_scaling only when the file
    declares one).

  Raises:
    ValueError: a required metadata key is missing, or the rotary dimension is not head_dim.
  """
  arch = meta.get("general.architecture")

  def need(key):
    if f"{arch}.{key}" not in meta:
      raise ValueError(f"GGUF metadata lacks {arch}.{key}")
    return meta[f"{arch}.{key}"]

  hidden, heads = int(need("embedding_length")), int(need("attention.head_count"))
  head_dim = int(meta.get(f"{arch}.attention.key_length", hidden // heads))
  rope_dim = int(meta.get(f"{arch}.rope.dimension_count", head_dim))
  if rope_dim != head_dim:
    raise ValueError(f"rotary dimension {rope_dim} != head_dim {head_dim} (partial rotary "
                     "embeddings are not supported)")
  config = {
      "architectures": ["LlamaForCausalLM"],
      "model_type": "llama",
      "hidden_size": hidden,
      "intermediate_size": int(need("feed_forward_length")),
      "num_hidden_layers": int(need("block_count")),
      "num_attention_heads": heads,
      "num_key_value_heads": int(meta.get(f"{arch}.attention.head_count_kv", heads)),
      "head_dim": head_dim,
      "hidden_act": "silu",
      "rms_norm_eps": _float32_value(need("attention.layer_norm_rms_epsilon")),
      "rope_theta": _float32_value(meta.get(f"{arch}.rope.freq_base", 10000.0)),
      "vocab_size": int(meta.get(f"{arch}.vocab_size", shapes.get("token_embd.weight", (0,))[0])),
      "max_position_embeddings": int(need("context_length")),
      "tie_word_embeddings": "output.weight" not in shapes,
  }
  for name in ("bos", "eos", "pad"):
    key = f"tokenizer.ggml.{'padding' if name == 'pad' else name}_token_id"
    if key in meta:
      config[f"{name}_token_id"] = int(meta[key])
  scaling = _rope_scaling(meta, arch)
  if scaling is not None:
    config["rope_scaling"] = scaling
  return config


def expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
  """Hugging Face tensor name → shape ([out, in]) of a llama model with this config."""
  D, F, V = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
  Q = config["num_attention_heads"] * config["head_dim"]
  KV = config["num_key_value_heads"] * config["head_dim"]
  layer = {"input_layernorm.weight": (D,), "post_attention_layernorm.weight": (D,),
           "self_attn.q_proj.weight": (Q, D), "self_attn.k_proj.weight": (KV, D),
           "self_attn.v_proj.weight": (KV, D), "self_attn.o_proj.weight": (D, Q),
           "mlp.gate_proj.weight": (F, D), "mlp.up_proj.weight": (F, D),
           "mlp.down_proj.weight": (D, F)}
  shapes = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,)}
  if not config["tie_word_embeddings"]:
    shapes["lm_head.weight"] = (V, D)
  for i in range(config["num_hidden_layers"]):
    shapes.update({f"model.layers.{i}.{name}": shape for name, shape in layer.items()})
  return shapes


def _open(path):
  """A `gguf.GGUFReader` over the memory-mapped file, after checking that it is a whole GGUF."""
  try:
    import gguf
  except ImportError as e:
    raise ImportError("reading GGUF files needs the gguf package: pip install gguf") from e
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such GGUF file")
  with open(path, "rb") as f:
    if f.read(4) != b"GGUF":
      raise ValueError(f"{path}: not a GGUF file (it does not start with the bytes 'GGUF')")
  try:
    reader = gguf.GGUFReader(path, "r")
  except Exception as e:  # the reader's errors on a cut-off file are numpy reshape/index errors
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ValueError(f"{path}: truncated or corrupt GGUF file ({reason})") from e
  size = os.path.getsize(path)
  if any(t.data_offset + t.n_bytes > size for t in reader.tensors):
    raise ValueError(f"{path}: truncated GGUF file (its tensors need more than {size} bytes)")
  return reader


def _metadata(reader) -> dict:
  """Metadata key → value, leaving out the tokenizer's long per-token arrays."""
  return {k: f.contents() for k, f in reader.fields.items()
          if not k.startswith("tokenizer.ggml.") or len(f.data) == 1}


def check_tensors(config: dict, shapes: dict) -> None:
  """Raises a ValueError naming the GGUF tensors that are not this config's state dict.

  Args:
    config: from `llama_config`.
    shapes: GGUF tensor name → its shape in NumPy order.
  """
  unmapped = [name for name in shapes if hf_name(name) is None]
  if unmapped:
    raise ValueError(f"GGUF tensors with no Hugging Face name: {', '.join(unmapped)}")
  expected, found = expected_shapes(config), {hf_name(k): v for k, v in shapes.items()}
  missing = [name for name in expected if name not in found]
  if missing:
    raise ValueError(f"GGUF file lacks the tensors for {', '.join(missing)}")
  wrong = [f"{k} {found[k]} (expected {v})" for k, v in expected.items() if found[k] != v]
  extra = [k for k in found if k not in expected]  # e.g. a layer past num_hidden_layers
  if wrong or extra:
    raise ValueError(f"GGUF tensors that do not fit its config: {', '.join(wrong + extra)}")


def _float32(tensor, config: dict) -> np.ndarray:
  """One GGUF tensor dequantised to a float32 array of its own, Q/K rows un-permuted."""
  from gguf.quants import dequantize
  w = dequantize(tensor.data, tensor.tensor_type)
  w = np.array(w, np.float32) if isinstance(w, np.memmap) else w.astype(np.float32, copy=False)
  name = hf_name(tensor.name)
  if name.endswith("q_proj.weight"):
    return unpermute_rotary(w, config["num_attention_heads"])
  if name.endswith("k_proj.weight"):
    return unpermute_rotary(w, config["num_key_value_heads"])
  return w


def _config(reader, path) -> dict:
  """The checked config of an open GGUF file (errors name `path`)."""
  meta = _metadata(reader)
  arch = meta.get("general.architecture")
  if arch not in SUPPORTED_ARCHITECTURES:
    raise ValueError(f"{path}: unsupported GGUF architecture {arch!r} (supported: "
                     f"{', '.join(SUPPORTED_ARCHITECTURES)})")
  shapes = {t.name: _shape(t) for t in reader.tensors}
  try:
    config = llama_config(meta, shapes)
    check_tensors(config, shapes)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from e
  return config


def _shape(tensor) -> tuple[int, ...]:
  """A GGUF tensor's shape in NumPy order (GGUF lists the fastest-varying dimension first)."""
  return tuple(int(n) for n in reversed(tensor.shape))


def read_gguf_config(path) -> dict:
  """The config.json of a llama GGUF file, from its metadata alone (no tensor is dequantised);
  the file is checked as `read_gguf` checks it."""
  return _config(_open(path), path)


def read_gguf(path) -> tuple[dict, dict[str, np.ndarray]]:
  """Reads a llama-architecture GGUF file as a Hugging Face config and state dict.

  Args:
    path: the .gguf file.

  Returns:
    (config, tensors): `config` as in a transformers `config.json` (see `llama_config`);
    `tensors` Hugging Face name → float32 array, [out, in] for the linear layers, with W_q and
    W_k un-permuted (`unpermute_rotary`); `lm_head.weight` only when the file has
    `output.weight`.

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: not a GGUF file, a truncated one, an architecture other than llama, or tensors
      that have no Hugging Face name, are missing or have the wrong shape (the message names
      them).
  """
  reader = _open(path)
  config = _config(reader, path)
  return config, {hf_name(t.name): _float32(t, config).reshape(_shape(t)) for t in reader.tensors}
