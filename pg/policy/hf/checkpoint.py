"""Hugging Face checkpoints in and out of the "llama" policy, with no torch on the path.

    config.model = {"name": "llama", "init_from": "/path/to/model_dir" or "/path/to/file.gguf"}

A model directory holds `config.json` and `model.safetensors` (or shards listed in
`model.safetensors.index.json`); the `safetensors` package reads them as NumPy arrays. A GGUF
file is read by `pg.policy.hf.gguf_io` into the same names. The architecture comes from the
checkpoint (`pg.policy.hf.families`); each checkpoint key maps through its family's table or is
reported, and each shape is checked against the abstract model before any tensor is read.
`save_pretrained` writes a policy back as a directory `transformers` and vLLM load.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import jax
import numpy as np

from pg.policy import base, lora
from pg.policy.hf import families

FIELD = "config.model.init_from"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json", "vocab.json", "merges.txt")


def is_gguf(path: str) -> bool:
  return str(path).endswith(".gguf")


def read_hf_config(path: str) -> dict:
  """The checkpoint's `config.json` (a directory) or the one its GGUF metadata implies."""
  if is_gguf(path):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{FIELD}: no GGUF file at {path!r}.")
    from pg.policy.hf import gguf_io  # pylint: disable=import-outside-toplevel
    try:
      return gguf_io.read_gguf_config(path)
    except ValueError as e:
      raise ValueError(f"{FIELD}: {e}") from None
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{FIELD}: {path!r} is neither a model directory nor a .gguf file.")
  config_path = os.path.join(path, "config.json")
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"{FIELD}: {path!r} has no config.json (a Hugging Face model "
                            f"directory holds config.json and model.safetensors).")
  try:
    with open(config_path, encoding="utf-8") as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{FIELD}: {config_path} is not valid JSON ({e}).") from None


def architecture_options(path, options: dict, defaults: dict, *, vocab_size: int,
                         max_len: int) -> dict:
  """The "llama" options for checkpoint `path`: its architecture, with the user's non-
  architecture options (value head, dtype). An architecture field the user set to something
  else than the checkpoint's, a task vocabulary the embeddings do not cover, or a context
  longer than the model's is refused, named."""
  found = families.options(read_hf_config(path), f"{FIELD} {path!r}")
  for name in families.ARCHITECTURE_FIELDS:
    value = options.get(name)
    if name == "head_dim" and value == found["d_model"] / found["num_heads"]:
      value = None  # the default width, spelt out
    if value != defaults.get(name) and value != found[name]:
      raise ValueError(f"config.model.{name} = {options[name]!r}, but the checkpoint at {FIELD} = "
                       f"{path!r} has {found[name]!r}: leave it unset with init_from.")
  if vocab_size > found["vocab_size"]:
    raise ValueError(f"config.task: the task's vocabulary ({vocab_size} ids) does not fit the "
                     f"embeddings ({found['vocab_size']} rows) of {FIELD} = {path!r}.")
  context = found["max_position_embeddings"]
  if context and max_len > context:
    raise ValueError(f"config.task: prompt + response = {max_len} positions exceed the context "
                     f"of {context} (max_position_embeddings) of {FIELD} = {path!r}.")
  if found["sliding_window"] and max_len > found["sliding_window"]:
    raise ValueError(f"config.task: {max_len} positions exceed the sliding window of "
                     f"{found['sliding_window']} of {FIELD} = {path!r}, which pg does not "
                     f"implement.")
  if not is_gguf(path):
    _safetensors_files(path)  # a missing or unreadable weights file is refused now, not later
  arch = {k: found[k] for k in families.ARCHITECTURE_FIELDS}
  return {**options, **arch, "vocab_size": found["vocab_size"]}


def _safetensors_files(path: str) -> dict:
  """{key: file} over the directory's safetensors (single file or sharded index)."""
  index = os.path.join(path, "model.safetensors.index.json")
  single = os.path.join(path, "model.safetensors")
  if os.path.isfile(index):
    try:
      with open(index, encoding="utf-8") as f:
        weight_map = json.load(f)["weight_map"]
      if not isinstance(weight_map, dict):
        raise TypeError("weight_map is not an object")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
      raise ValueError(f"{FIELD}: {index} is not a safetensors index with a weight_map "
                       f"({type(e).__name__}: {e}).") from None
    missing = sorted({v for v in weight_map.values()
                      if not os.path.isfile(os.path.join(path, v))})
    if missing:
      raise FileNotFoundError(f"{FIELD}: {index} lists shards that are not there: {missing}.")
    for shard in sorted(set(weight_map.values())):
      _open(os.path.join(path, shard))  # reads the header only
    return {k: os.path.join(path, v) for k, v in weight_map.items()}
  if not os.path.isfile(single):
    others = sorted(n for n in os.listdir(path) if n.endswith((".bin", ".pt", ".pth", ".ckpt")))
    raise FileNotFoundError(f"{FIELD}: {path!r} has neither model.safetensors nor "
                            f"model.safetensors.index.json{f' (only {others})' if others else ''}: "
                            f"only safetensors checkpoints are read; transformers' "
                            f"save_pretrained(..., safe_serialization=True) writes one.")
  return {k: single for k in _open(single).keys()}


def _open(file: str):
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  try:
    return safe_open(file, framework="np")
  except Exception as e:  # SafetensorError for a truncated or corrupt file
    raise ValueError(f"{FIELD}: {file} is not a readable safetensors file "
                     f"({type(e).__name__}: {e}).") from None


def _tree_get(tree, path: str):
  for part in path.split("/"):
    tree = tree[part]
  return tree


def _tree_set(tree: dict, path: str, value) -> None:
  *parents, last = path.split("/")
  for part in parents:
    tree = tree.setdefault(part, {})
  tree[last] = value


def _mapping(policy, architecture: str, where: str):
  table = families.FAMILIES[architecture].table
  return families.expand(table, policy.cfg.num_layers, policy.cfg.tie_embeddings)


def _check_keys(keys, mapping, tied: bool, where: str):
  unknown = [k for k in keys if k not in mapping and not k.endswith(families.IGNORED_SUFFIXES)
             and not (tied and k == "lm_head.weight")]
  if unknown:
    raise ValueError(f"{where}: {len(unknown)} checkpoint key(s) map to no parameter: "
                     f"{unknown[:4]}{' ...' if len(unknown) > 4 else ''}.")
  missing = [k for k in mapping if k not in keys]
  if missing:
    raise ValueError(f"{where}: the checkpoint lacks {len(missing)} parameter(s): "
                     f"{missing[:4]}{' ...' if len(missing) > 4 else ''}.")


def _check_shapes(shapes: dict, mapping, abstract, where: str):
  bad = []
  for key, (path, transposed) in mapping.items():
    want = tuple(_tree_get(abstract["params"], path).shape)
    got = tuple(shapes[key])[::-1] if transposed else tuple(shapes[key])
    if got != want:
      bad.append(f"{key}: checkpoint {tuple(shapes[key])}, model expects "
                 f"{want[::-1] if transposed else want}")
  if bad:
    raise ValueError(f"{where}: shapes do not fit the model: {'; '.join(bad[:3])}"
                     f"{f'; and {len(bad) - 3} more' if len(bad) > 3 else ''}.")


def load_params(path: str, policy) -> dict:
  """The checkpoint's weights as `{"params": ...}` of float32 NumPy arrays in `policy`'s tree
  (no value head: `policy.warm_start` adds the fresh one)."""
  where = f"{FIELD} {path!r}"
  abstract = base.abstract_params(policy)
  if is_gguf(path):  # one read of the file gives its config and its tensors
    from pg.policy.hf import gguf_io  # pylint: disable=import-outside-toplevel
    try:
      config, tensors = gguf_io.read_gguf(path)
    except ValueError as e:
      raise ValueError(f"{FIELD}: {e}") from None
    mapping = _mapping(policy, families.family_of(config, where)[0], where)
    _check_keys(list(tensors), mapping, policy.cfg.tie_embeddings, where)
    _check_shapes({k: v.shape for k, v in tensors.items()}, mapping, abstract, where)
    get = lambda key: tensors[key]
  else:
    mapping = _mapping(policy, families.family_of(read_hf_config(path), where)[0], where)
    files = _safetensors_files(path)
    _check_keys(list(files), mapping, policy.cfg.tie_embeddings, where)
    handles = {f: _open(f) for f in set(files.values())}
    try:
      shapes = {k: handles[files[k]].get_slice(k).get_shape() for k in mapping}
    except Exception as e:  # the index names a shard that lacks the key
      raise ValueError(f"{where}: a tensor the index lists is not in its shard "
                       f"({type(e).__name__}: {e}).") from None
    _check_shapes(shapes, mapping, abstract, where)

    def get(key):
      try:
        return handles[files[key]].get_tensor(key)
      except Exception as e:  # a shard cut short after its header
        raise ValueError(f"{where}: cannot read {key} from {files[key]} "
                         f"({type(e).__name__}: {e}).") from None
  params: dict = {}
  for key, (tree_path, transposed) in mapping.items():
    array = np.asarray(get(key), np.float32)
    _tree_set(params, tree_path, np.ascontiguousarray(array.T if transposed else array))
  return {"params": params}


def default_architecture(policy) -> str:
  """The family a policy saves as: its checkpoint's, else the one its features name."""
  if policy.checkpoint:
    return families.family_of(read_hf_config(policy.checkpoint), FIELD)[0]
  if policy.cfg.qkv_bias:
    return "Qwen2ForCausalLM"
  return "Qwen3ForCausalLM" if policy.cfg.qk_norm else "LlamaForCausalLM"


def _check_fit(params, mapping, abstract) -> None:
  """Refuses params that are not one run's of this policy (a seed axis, another size), named."""
  tree = params.get("params") if hasattr(params, "get") else None
  if tree is None:
    raise ValueError(f"save_pretrained: params must be the policy's {{'params': ...}} tree, got "
                     f"{type(params).__name__}.")
  for key, (path, _) in mapping.items():
    try:
      got = tuple(np.shape(_tree_get(tree, path)))
    except (KeyError, TypeError):
      raise ValueError(f"save_pretrained: params lack {path} ({key}): they are not this "
                       f"policy's.") from None
    want = tuple(_tree_get(abstract["params"], path).shape)
    if got == want:
      continue
    if got[1:] == want:
      raise ValueError(f"save_pretrained: params have a leading axis ({path}: {got}, the policy's "
                       f"{want}): pass one run's params, e.g. "
                       f"jax.tree.map(lambda x: x[0], state.params).")
    raise ValueError(f"save_pretrained: params do not fit the policy ({path}: {got}, the "
                     f"policy's {want}).")


# Fields of the source's config.json kept when a policy is saved as the source's architecture:
# the sliding window, which pg's config does not hold (it refuses longer contexts) but a loader
# applies.
KEPT_FIELDS = ("sliding_window", "use_sliding_window", "max_window_layers", "layer_types")


def save_pretrained(params, policy, out_dir: str, *, architecture: str | None = None,
                    dtype: str = "float32", tokenizer_from: str | None = None,
                    overwrite: bool = False) -> str:
  """Writes `params` (one run's: no seed axis) as a Hugging Face model directory: config.json
  and model.safetensors (`dtype` float32 or bfloat16), plus the tokenizer files of the
  directory `tokenizer_from` (a model directory, whose special token ids are kept, or a
  tokenizer's alone; default: the policy's own checkpoint directory). Params with LoRA
  adapters (a "lora" collection, `pg.policy.lora`) are merged into their kernels. The value head
  is not part of the format and is left out; the checkpoint's context length (and sliding
  window, for its own architecture) is kept. Written to a temporary directory and renamed, so
  an interrupted save leaves nothing half-written; an existing non-empty `out_dir` is refused
  unless `overwrite`."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  architecture = architecture or default_architecture(policy)
  if architecture not in families.FAMILIES:
    raise ValueError(f"save_pretrained: architecture {architecture!r} is not supported; "
                     f"supported: {', '.join(families.FAMILIES)}.")
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise FileExistsError(f"save_pretrained: {out_dir!r} is a file, not a directory.")
  if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
    raise FileExistsError(f"save_pretrained: {out_dir!r} exists and is not empty (pass "
                          f"overwrite=True to replace it).")
  if dtype not in ("float32", "bfloat16"):
    raise ValueError(f"save_pretrained: dtype must be 'float32' or 'bfloat16', got {dtype!r}.")
  mapping = _mapping(policy, architecture, "save_pretrained")
  if hasattr(params, "get") and params.get(lora.LORA) is not None:  # LoRA: merged, W + (α/r) AB
    if getattr(policy, "lora_alpha", None) is None:
      raise ValueError("save_pretrained: params hold LoRA adapters but the policy has no "
                       "lora_alpha to merge them with (pg.policy.base.with_lora).")
    _check_fit(params, mapping, base.abstract_params(policy))
    params = lora.merge(params, policy.lora_alpha)
  _check_fit(params, mapping, base.abstract_params(policy))
  config = families.hf_config(policy.cfg, architecture)
  config["dtype"] = config["torch_dtype"] = dtype
  if policy.checkpoint:
    source_config = read_hf_config(policy.checkpoint)
    found = families.options(source_config, FIELD)
    config["max_position_embeddings"] = found["max_position_embeddings"] or policy.cfg.max_len
    if found["sliding_window"] and families.family_of(source_config, FIELD)[0] == architecture:
      config.update({k: source_config[k] for k in KEPT_FIELDS if k in source_config})
      config["sliding_window"] = found["sliding_window"]
  np_dtype = np.float32
  if dtype == "bfloat16":
    import ml_dtypes  # pylint: disable=import-outside-toplevel
    np_dtype = ml_dtypes.bfloat16
  tensors = {}
  for key, (tree_path, transposed) in mapping.items():
    array = np.asarray(jax.device_get(_tree_get(params["params"], tree_path)), np.float32)
    tensors[key] = np.ascontiguousarray((array.T if transposed else array).astype(np_dtype))
  source = tokenizer_from or (policy.checkpoint if policy.checkpoint
                              and os.path.isdir(policy.checkpoint) else None)
  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".saving-", dir=parent)
  try:
    save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    if source:
      model_dir = os.path.isfile(os.path.join(source, "config.json"))
      source_config = read_hf_config(source) if model_dir else {}  # or a tokenizer alone
      for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if k in source_config:
          config[k] = source_config[k]
      for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(source, name)):
          shutil.copy2(os.path.join(source, name), os.path.join(tmp, name))
    with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
      json.dump(config, f, indent=2)
    if os.path.isdir(out_dir):
      old = tempfile.mkdtemp(prefix=".replaced-", dir=parent)
      os.replace(out_dir, old)  # out_dir is never absent or half-written
      os.replace(tmp, out_dir)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out_dir
