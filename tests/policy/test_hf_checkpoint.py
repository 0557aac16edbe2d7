"""Hugging Face checkpoints in and out of the "llama" policy (`pg.policy.hf.checkpoint`): every
fixture family and a random-init policy saved and read back bit-identically (bfloat16 within
its rounding), transformers loading what pg saved with the same logits, and one-line refusals,
raised when the policy is built or its weights read and writing nothing, for each kind of bad
checkpoint."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from pg.policy import base, build_policy
from pg.policy.hf import checkpoint, families

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "hf")
NAMES = ["llama", "llama3_tied", "qwen2", "qwen3", "mistral"]
TINY = {"num_layers": 2, "d_model": 32, "num_heads": 4, "num_kv_heads": 2, "mlp_dim": 48}
VARIANTS = {  # options -> the architecture it saves as
    "tied": ({}, "LlamaForCausalLM"),
    "untied": ({"tie_embeddings": False}, "LlamaForCausalLM"),
    "qkv_bias": ({"qkv_bias": True}, "Qwen2ForCausalLM"),
    "qk_norm": ({"qk_norm": True}, "Qwen3ForCausalLM"),
}


def from_checkpoint(path, vocab_size=200, max_len=16, **options):
  return build_policy({"name": "llama", "init_from": str(path), **options},
                      vocab_size=vocab_size, max_len=max_len)


def tiny(max_len=16, **options):
  """A policy with no checkpoint (odd vocabulary of 23) and random params: normal(0, 0.5) in
  every leaf, norm scales included, drawn by NumPy in the shapes `init` gives (nothing
  compiles)."""
  policy = build_policy({"name": "llama", **TINY, **options}, vocab_size=23, max_len=max_len)
  rng = np.random.default_rng(1)
  return policy, jax.tree.map(lambda x: rng.normal(0, 0.5, x.shape).astype(np.float32),
                              base.abstract_params(policy))


def assert_trees_equal(a, b):
  flat_a, flat_b = (jax.tree_util.tree_flatten_with_path(t)[0] for t in (a, b))
  assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
  for (path, x), (_, y) in zip(flat_a, flat_b):
    assert np.asarray(x).dtype == np.asarray(y).dtype, jax.tree_util.keystr(path)
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def read_config(path):
  with open(os.path.join(path, "config.json")) as f:
    return json.load(f)


def listing(root):
  """Every file and folder under `root` with its size and mtime: what 'nothing written' keeps."""
  out = {}
  for folder, dirs, files in os.walk(root):
    for name in dirs + files:
      p = os.path.join(folder, name)
      st = os.stat(p)
      out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
  return out


# Round trips.


@pytest.mark.parametrize("name", NAMES)
def test_fixture_round_trip_is_bit_identical(name, tmp_path):
  """Loaded, saved and loaded again: every leaf equal; the same architecture, options, context
  and token ids in config.json; the tokenizer files copied byte for byte."""
  source = os.path.join(FIXTURES, name)
  policy = from_checkpoint(source)
  params = policy.pretrained_params()
  out = checkpoint.save_pretrained(params, policy, str(tmp_path / "out"))
  assert_trees_equal(from_checkpoint(out).pretrained_params(), params)
  saved, original = read_config(out), read_config(source)
  assert saved["architectures"] == original["architectures"]
  assert families.options(saved, "saved") == families.options(original, "source")
  for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
    assert saved[key] == original[key]
  copied = [n for n in checkpoint.TOKENIZER_FILES if os.path.isfile(os.path.join(source, n))]
  assert "tokenizer.json" in copied
  for n in copied:
    with open(os.path.join(source, n), "rb") as a, open(os.path.join(out, n), "rb") as b:
      assert a.read() == b.read(), n


@pytest.mark.parametrize("variant", VARIANTS)
def test_random_init_round_trip_is_bit_identical(variant, tmp_path):
  """A policy with no checkpoint saves as the family its features name (the value head left
  out) and reads back bit-identically."""
  options, architecture = VARIANTS[variant]
  policy, params = tiny(value_head="shared", **options)
  out = checkpoint.save_pretrained(params, policy, str(tmp_path / "out"))
  assert read_config(out)["architectures"] == [architecture]
  assert not any(n in checkpoint.TOKENIZER_FILES for n in os.listdir(out))
  reloaded = from_checkpoint(out, vocab_size=23, value_head="shared")
  assert reloaded.cfg == policy.cfg
  expected = {"params": {k: v for k, v in params["params"].items() if k != "value_out"}}
  assert_trees_equal(reloaded.pretrained_params(), expected)


def test_bfloat16_save_reloads_within_bfloat16_rounding(tmp_path):
  """dtype="bfloat16" stores BF16 tensors, each the float32 value rounded to nearest."""
  policy = from_checkpoint(os.path.join(FIXTURES, "qwen3"))
  params = policy.pretrained_params()
  out = checkpoint.save_pretrained(params, policy, str(tmp_path / "out"), dtype="bfloat16")
  assert read_config(out)["torch_dtype"] == read_config(out)["dtype"] == "bfloat16"
  with safe_open(os.path.join(out, "model.safetensors"), framework="np") as f:
    assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
  reloaded = from_checkpoint(out).pretrained_params()
  rounded = jax.tree.map(lambda x: x.astype(ml_dtypes.bfloat16).astype(np.float32), params)
  assert_trees_equal(reloaded, rounded)
  for a, b in zip(jax.tree.leaves(reloaded), jax.tree.leaves(params)):
    np.testing.assert_allclose(a, b, rtol=2 ** -8, atol=0)


def test_overwrite_replaces_a_saved_directory(tmp_path):
  policy, params = tiny()
  out = str(tmp_path / "out")
  checkpoint.save_pretrained(params, policy, out)
  other = jax.tree.map(lambda x: x + 1, params)
  checkpoint.save_pretrained(other, policy, out, overwrite=True)
  assert_trees_equal(from_checkpoint(out, vocab_size=23).pretrained_params(), other)
  assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary directory left behind


def test_save_refusals_write_nothing(tmp_path):
  """A non-empty out_dir without overwrite, params with a seed axis, an architecture pg cannot
  write or one the policy's features contradict: one line each; nothing changes on disk."""
  policy, params = tiny(tie_embeddings=False)
  qwen2, qwen2_params = tiny(qkv_bias=True)
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  before = listing(tmp_path)
  cases = [
      (lambda: checkpoint.save_pretrained(params, policy, str(out)), FileExistsError,
       "save_pretrained: .*out' exists and is not empty \\(pass overwrite=True"),
      (lambda: checkpoint.save_pretrained(jax.tree.map(lambda x: np.stack([x, x]), params),
                                          policy, str(tmp_path / "seeds")), ValueError,
       r"save_pretrained: params have a leading axis \(.*\(2, 23, 32\), the policy's "
       r"\(23, 32\)\): pass one run's params"),
      (lambda: checkpoint.save_pretrained(params, policy, str(tmp_path / "gpt2"),
                                          architecture="GPT2LMHeadModel"), ValueError,
       "save_pretrained: architecture 'GPT2LMHeadModel' is not supported; supported: "
       "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM"),
      (lambda: checkpoint.save_pretrained(qwen2_params, qwen2, str(tmp_path / "llama"),
                                          architecture="LlamaForCausalLM"), ValueError,
       "qkv_bias=True, qk_norm=False is not a LlamaForCausalLM"),
      (lambda: checkpoint.save_pretrained(params, policy, str(tmp_path / "half"),
                                          dtype="float16"), ValueError,
       "save_pretrained: dtype must be 'float32' or 'bfloat16'"),
  ]
  for call, error, match in cases:
    with pytest.raises(error, match=match) as e:
      call()
    assert "\n" not in str(e.value)
  assert listing(tmp_path) == before
  assert (out / "keep.txt").read_text() == "mine"


# transformers loads what pg saves.


@pytest.fixture(scope="module")
def hf():
  """logits(path, ids) of transformers' float32 eager model read from `path`."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  for family in ("llama", "mistral", "qwen2", "qwen3"):  # imported once, here, not in a test
    __import__(f"transformers.models.{family}.modeling_{family}")

  def logits(path, ids):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
      return model(torch.as_tensor(np.asarray(ids))).logits.numpy()
  return logits


IDS = np.array([[3, 17, 5, 9, 22, 1, 0, 14, 8, 2, 11]], np.int32)


# Each case compiles pg's forward once (~0.6 s); importing transformers and its first load take
# ~3 s of the fixture's setup, well under the 10 s that would make these slow tests.
@pytest.mark.parametrize("variant", VARIANTS)
def test_transformers_loads_a_random_init_policy(variant, hf, tmp_path):
  """transformers.AutoModelForCausalLM reads pg's directory and computes pg's float32 logits."""
  policy, params = tiny(**VARIANTS[variant][0])
  out = checkpoint.save_pretrained(params, policy, str(tmp_path / "out"))
  pg_logits, _ = jax.jit(policy.sequence_outputs)(params, jnp.asarray(IDS))
  np.testing.assert_allclose(hf(out, IDS), pg_logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_transformers_loads_a_perturbed_fixture(name, hf, tmp_path):
  """A fixture's params moved off transformers' own (so the saved numbers, not the source's,
  are what loads), saved and run by transformers: pg's logits within 1e-4."""
  policy = from_checkpoint(os.path.join(FIXTURES, name))
  params = policy.pretrained_params()
  rng = np.random.default_rng(7)
  params = jax.tree.map(lambda x: x + rng.normal(0, 0.05, x.shape).astype(np.float32), params)
  out = checkpoint.save_pretrained(params, policy, str(tmp_path / "out"))
  pg_logits, _ = jax.jit(policy.sequence_outputs)(params, jnp.asarray(IDS))
  np.testing.assert_allclose(hf(out, IDS), pg_logits, atol=1e-4, rtol=0)


# Bad checkpoints: refused, one line, when the policy is built or its weights are read.


def edit_config(**fields):
  def edit(d):
    config = read_config(d)
    config.update(fields)
    with open(os.path.join(d, "config.json"), "w") as f:
      json.dump(config, f)
  return edit


def edit_tensors(change):
  def edit(d):
    file = os.path.join(d, "model.safetensors")
    tensors = load_file(file)
    change(tensors)
    save_file(tensors, file, metadata={"format": "pt"})
  return edit


def drop_config_field(name):
  def edit(d):
    config = read_config(d)
    del config[name]
    with open(os.path.join(d, "config.json"), "w") as f:
      json.dump(config, f)
  return edit


def cut(keep_bytes):
  """model.safetensors cut to its first `keep_bytes` bytes (negative: less that many)."""
  def edit(d):
    file = os.path.join(d, "model.safetensors")
    with open(file, "rb") as f:
      data = f.read()
    with open(file, "wb") as f:
      f.write(data[:keep_bytes])
  return edit


def replace_file(name, data):
  def edit(d):
    with open(os.path.join(d, name), "wb") as f:
      f.write(data)
  return edit


def remove(*names):
  def edit(d):
    for n in names:
      os.remove(os.path.join(d, n))
  return edit


def only_pytorch_bin(d):
  os.remove(os.path.join(d, "model.safetensors"))
  replace_file("pytorch_model.bin", b"PK\x03\x04 not read")(d)


UNREADABLE = "config.model.init_from: .*model.safetensors is not a readable safetensors file"
BAD = {  # case -> (fixture, edit, build options, stage, message)
    "unsupported_architecture": (
        "llama", edit_config(architectures=["GPT2LMHeadModel"], model_type="gpt2"), {}, "build",
        r"config.model.init_from .*: architecture \['GPT2LMHeadModel'\] is not supported; "
        r"supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM"),
    "shapes_do_not_fit": (
        "llama", edit_config(hidden_size=64), {}, "load",
        r"config.model.init_from .*: shapes do not fit the model: model.embed_tokens.weight: "
        r"checkpoint \(200, 48\), model expects \(200, 64\); .*; and \d+ more"),
    "extra_tensor": (
        "llama", edit_tensors(lambda t: t.update({"model.layers.0.mlp.extra.weight":
                                                  np.zeros((2, 2), np.float32)})), {}, "load",
        r"config.model.init_from .*: 1 checkpoint key\(s\) map to no parameter: "
        r"\['model.layers.0.mlp.extra.weight'\]"),
    "missing_tensor": (
        "qwen2", edit_tensors(lambda t: t.pop("model.layers.1.self_attn.k_proj.bias")), {},
        "load", r"config.model.init_from .*: the checkpoint lacks 1 parameter\(s\): "
        r"\['model.layers.1.self_attn.k_proj.bias'\]"),
    "truncated_data": ("llama", cut(-1000), {}, "build", UNREADABLE),
    "truncated_header": ("llama", cut(200), {}, "build", UNREADABLE),
    "corrupt_header": ("llama", replace_file("model.safetensors", bytes(range(256)) * 64), {},
                       "build", UNREADABLE),
    "missing_shard": (
        "llama3_tied", remove("model-00002-of-00004.safetensors"), {}, "build",
        r"config.model.init_from: .*model.safetensors.index.json lists shards that are not "
        r"there: \['model-00002-of-00004.safetensors'\]"),
    "missing_config": ("llama", remove("config.json"), {}, "build",
                       "config.model.init_from: .* has no config.json"),
    "config_not_json": ("llama", replace_file("config.json", b"{not json"), {}, "build",
                        "config.model.init_from: .*config.json is not valid JSON"),
    "config_lacks_a_field": (
        "mistral", drop_config_field("intermediate_size"), {}, "build",
        r"config.model.init_from .*: config.json lacks integer field\(s\) "
        r"\['intermediate_size'\]"),
    "missing_weights": ("llama", remove("model.safetensors"), {}, "build",
                        "config.model.init_from: .* has neither model.safetensors nor "
                        "model.safetensors.index.json: only safetensors"),
    "only_pytorch_bin": ("llama", only_pytorch_bin, {}, "build",
                         r"config.model.init_from: .* has neither model.safetensors nor "
                         r"model.safetensors.index.json \(only \['pytorch_model.bin'\]\)"),
    "vocabulary_too_large": ("llama", None, {"vocab_size": 201}, "build",
                             r"config.task: the task's vocabulary \(201 ids\) does not fit the "
                             r"embeddings \(200 rows\) of config.model.init_from"),
    "context_too_long": ("llama", None, {"max_len": 65}, "build",
                         r"config.task: prompt \+ response = 65 positions exceed the context "
                         r"of 64 \(max_position_embeddings\) of config.model.init_from"),
    "contradicting_option": ("llama", None, {"num_layers": 5}, "build",
                             "config.model.num_layers = 5, but the checkpoint at "
                             "config.model.init_from = .* has 2: leave it unset"),
    "unsupported_rope": (
        "llama", edit_config(rope_parameters={"rope_type": "yarn", "factor": 4.0,
                                              "rope_theta": 1e4}), {}, "build",
        "config.model.init_from .*: model.rope_scaling: rope_type 'yarn' is not supported"),
    "unsupported_activation": ("qwen3", edit_config(hidden_act="gelu"), {}, "build",
                               "config.model.init_from .*: Qwen3ForCausalLM with "
                               "hidden_act='gelu' is not supported"),
    "no_such_path": ("llama", lambda d: shutil.rmtree(d), {}, "build",
                     "config.model.init_from: .* is neither a model directory nor a .gguf file"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_checkpoint_is_refused_in_one_line_writing_nothing(case, tmp_path):
  """Each bad checkpoint or contradicting option is refused at the stage named (build_policy,
  or pretrained_params once the architecture is known), in one line naming the field; the
  checkpoint's directory is left as it was."""
  name, edit, options, stage, match = BAD[case]
  path = tmp_path / "ckpt"
  shutil.copytree(os.path.join(FIXTURES, name), path)
  if edit:
    edit(str(path))
  before = listing(tmp_path)
  reached = "build"
  with pytest.raises((ValueError, FileNotFoundError)) as e:
    policy = from_checkpoint(path, **options)
    reached = "load"
    policy.pretrained_params()
  assert reached == stage, e.value
  assert "\n" not in str(e.value)
  assert e.match(match)
  assert listing(tmp_path) == before
