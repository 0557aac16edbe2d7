"""A model directory's tokenizer: ids and text as transformers gives them, the special ids every
config file declares, BOS as tokenizer.json's post-processor adds it, and the load errors."""

import json
import os

import numpy as np
import pytest
from text_fixtures import CHATS, STRINGS, write_json

from pg.text import load_tokenizer

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures",
                        "hf")


def test_facts_from_every_config_file(make_model_dir):
  """eos ids: generation_config.json, then config.json, then the tokenizer's eos_token, each
  once; pad from the tokenizer, else the first eos; no BOS unless one is named."""
  tok = load_tokenizer(make_model_dir(generation={"eos_token_id": [2, 0]},
                                      model_config={"eos_token_id": 0}))
  assert tok.eos_ids == (2, 0) and tok.pad_id == 0 and tok.bos_id is None and not tok.add_bos
  assert tok.vocab_size == 400 == tok.backend.get_vocab_size()
  assert dict(tok.special_tokens) == {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
  tok = load_tokenizer(make_model_dir(config={"pad_token": ...}, generation={"eos_token_id": 0}))
  assert tok.eos_ids == (0, 2) and tok.pad_id == 0  # the first eos pads
  tok = load_tokenizer(make_model_dir(config={"pad_token": ...}))
  assert tok.eos_ids == (2,) and tok.pad_id == 2


def test_bos_follows_the_post_processor(make_model_dir, auto_tokenizer):
  directory = make_model_dir(bos=True)
  tok, theirs = load_tokenizer(directory), auto_tokenizer.from_pretrained(str(directory))
  assert tok.bos_id == 3 and tok.add_bos and tok.special_tokens["bos_token"] == "<s>"
  for s in STRINGS:
    assert tok.encode(s) == theirs(s)["input_ids"] and tok.encode(s)[0] == 3, s
  for chat in CHATS:  # the rendered chat gets no BOS of its own
    expected = theirs.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)
    assert tok.encode_chat(chat) == expected["input_ids"] and 3 not in tok.encode_chat(chat)
  # add_bos_token in the config does not override tokenizer.json (transformers drops it too)
  assert not load_tokenizer(make_model_dir(config={"add_bos_token": True})).add_bos


def test_ids_and_text_equal_transformers(make_model_dir, auto_tokenizer):
  directory = make_model_dir()
  tok, theirs = load_tokenizer(directory), auto_tokenizer.from_pretrained(str(directory))
  assert tok.vocab_size == len(theirs)
  for s in STRINGS:
    ids = theirs(s)["input_ids"]
    assert tok.encode(s) == ids, s
    assert tok.decode(ids) == theirs.decode(ids, skip_special_tokens=True) == s.replace(
        "<|im_start|>", "").replace("<|im_end|>", "").replace("<|endoftext|>", "")
    assert tok.decode(ids, skip_special_tokens=False) == theirs.decode(ids) == s
  assert tok.encode("<|im_end|>") == [2]  # special tokens in text stay whole
  assert tok.decode(np.array(tok.encode("naïve 日本語"), np.int32)) == "naïve 日本語"


def test_a_named_token_only_in_the_vocabulary_becomes_special(make_model_dir, auto_tokenizer):
  """As transformers: `eos_token: <eot>`, in tokenizer.json's vocab but not its added tokens,
  is matched whole in text and skipped by decode."""
  directory = make_model_dir(config={"eos_token": "<eot>"})
  state = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
  state["model"]["vocab"]["<eot>"] = len(state["model"]["vocab"])
  write_json(directory / "tokenizer.json", state)
  tok, theirs = load_tokenizer(directory), auto_tokenizer.from_pretrained(str(directory))
  assert tok.eos_ids == (400,) and tok.vocab_size == 401 == len(theirs)
  ids = tok.encode("a<eot>b")
  assert ids == theirs("a<eot>b")["input_ids"] and 400 in ids
  assert tok.decode(ids) == theirs.decode(ids, skip_special_tokens=True) == "ab"


def test_chat_template_file_and_legacy_special_tokens(make_model_dir):
  directory = make_model_dir(config={"eos_token": ..., "pad_token": ...,
                                     "chat_template": [{"name": "default", "template": "A"},
                                                       {"name": "tool_use", "template": "B"}]})
  write_json(directory / "special_tokens_map.json", {"eos_token": {"content": "<|im_end|>"}})
  tok = load_tokenizer(directory)
  assert tok.chat_template == "A" and tok.eos_ids == (2,) and tok.pad_id == 2
  (directory / "chat_template.jinja").write_text("C", encoding="utf-8")
  assert load_tokenizer(directory).chat_template == "C"  # the .jinja file wins, as in transformers


def test_load_errors(tmp_path, make_model_dir):
  with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no tokenizer.json"):
    load_tokenizer(tmp_path)
  with pytest.raises(FileNotFoundError, match="no such model directory or .gguf file"):
    load_tokenizer(tmp_path / "missing")
  (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
  with pytest.raises(ValueError, match="weights.bin: not a model directory or a .gguf file"):
    load_tokenizer(tmp_path / "weights.bin")
  directory = make_model_dir()
  (directory / "generation_config.json").write_text("{oops", encoding="utf-8")
  with pytest.raises(ValueError, match="generation_config.json: not valid JSON"):
    load_tokenizer(directory)


@pytest.mark.skipif(not os.path.isdir(FIXTURES), reason="no tests/fixtures/hf")
@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_fixture_models_match_their_recorded_cases(name):
  """tests/fixtures/hf: the ids and chat transformers recorded (tokenizer_cases.json)."""
  with open(os.path.join(FIXTURES, "tokenizer_cases.json"), encoding="utf-8") as f:
    cases = json.load(f)
  tok = load_tokenizer(os.path.join(FIXTURES, name))
  assert tok.vocab_size == cases["vocab_size"]
  assert tok.eos_ids == (2, 0) and tok.pad_id == 0 and tok.bos_id is None
  for case in cases["encode"]:
    assert tok.encode(case["text"]) == case["ids"]
    assert tok.decode(case["ids"]) == case["text"]
  chat = cases["chat"]
  text = tok.apply_chat_template(chat["messages"], add_generation_prompt=chat[
      "add_generation_prompt"])
  assert text == chat["text"]
  assert tok.encode_chat(chat["messages"]) == chat["ids"]
