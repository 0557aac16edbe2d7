"""Fixtures for the text tests: a tiny model directory, and transformers for parity checks
(skipped where it is not installed)."""

import logging

import pytest
from text_fixtures import CHATML, train_bpe, write_json
from tokenizers import processors


@pytest.fixture
def make_model_dir(tmp_path):
  """make_model_dir(bos=False, config=..., generation=..., model_config=...) -> a directory with
  tokenizer.json (BOS prepended by its post-processor when `bos`), tokenizer_config.json (ChatML,
  eos <|im_end|>, pad <|endoftext|>, updated by `config`, where a value of `...` drops a key),
  and generation_config.json / config.json where given."""
  count = iter(range(1000))

  def make(bos=False, config=None, generation=None, model_config=None):
    directory = tmp_path / f"model{next(count)}"
    directory.mkdir()
    tokenizer = train_bpe(["<s>"] if bos else [])
    if bos:
      tokenizer.post_processor = processors.TemplateProcessing(
          single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 3)])
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
                        "pad_token": "<|endoftext|>", "chat_template": CHATML,
                        **({"bos_token": "<s>"} if bos else {}), **(config or {})}
    write_json(directory / "tokenizer_config.json",
               {k: v for k, v in tokenizer_config.items() if v is not ...})
    if generation is not None:
      write_json(directory / "generation_config.json", generation)
    if model_config is not None:
      write_json(directory / "config.json", model_config)
    return directory

  return make


@pytest.fixture(scope="session")
def auto_tokenizer():
  """transformers.AutoTokenizer (its import takes a few seconds, once a session)."""
  transformers = pytest.importorskip("transformers")
  transformers.logging.set_verbosity_error()
  logging.getLogger("transformers").setLevel(logging.ERROR)
  return transformers.AutoTokenizer
