"""A model's tokenizer: text ↔ ids, its special ids and its chat template.

    tok = load_tokenizer("path/to/model_dir")        # tokenizer.json (+ the config files)
    tok = load_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf")  # rebuilt from GGUF metadata
    tok.encode("Hello")                     # ids, with BOS where the model adds one
    tok.encode_chat([{"role": "user", "content": "Hi"}])  # the rendered prompt's ids
    tok.eos_ids                             # every id that ends a turn or the sequence

From a model directory the `tokenizers` backend is `tokenizer.json` as written (its
post-processor decides whether a BOS is prepended, as in transformers, which ignores
`add_bos_token` when a `tokenizer.json` exists). `tokenizer_config.json` names the special
tokens (the legacy `special_tokens_map.json` does for a config without `added_tokens_decoder`),
`chat_template.jinja` or `tokenizer_config.json` holds the chat template, and
`generation_config.json` / `config.json` declare more end ids. A named special token that
`tokenizer.json` lists only in its vocabulary is made a special added token, as transformers
does, so it is matched whole in text and skipped by `decode`. (transformers 5 rebuilds some
classes a config names, e.g. `GPT2Tokenizer`, from the vocabulary with that class's own
pre-tokenizer, dropping the one in `tokenizer.json`; this keeps the file's, as the `tokenizers`
library and the model's training did.) A GGUF file: see `pg.text.gguf_vocab`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
from typing import Mapping

from tokenizers import AddedToken
from tokenizers import Tokenizer as Backend

from pg.text import chat, gguf_vocab

NAMED_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                "mask_token")


@dataclasses.dataclass(frozen=True, eq=False)
class Tokenizer:
  """A loaded tokenizer (build it with `load_tokenizer`).

  Attributes:
    backend: the `tokenizers.Tokenizer` doing the work.
    path: the model directory or GGUF file it came from (named in errors).
    vocab_size: how many ids it can produce, added tokens included (max id + 1).
    bos_id: the BOS token's id, or None.
    eos_ids: every end-of-turn / end-of-sequence id the model declares, in a stable order
      (generation_config.json, config.json, then the tokenizer's `eos_token`; for a GGUF its
      eos, eot and eom ids).
    pad_id: the pad token's id, else the first of `eos_ids` (None if neither exists).
    chat_template: the Jinja chat template, or None.
    special_tokens: the named special tokens (`bos_token`, `eos_token`, ...) the chat template
      sees, as strings.
    add_bos: whether `encode` prepends `bos_id` (the backend's post-processor decides).
    clean_up_spaces: `decode` applies transformers' `clean_up_tokenization` (a config's
      `clean_up_tokenization_spaces`, which transformers too ignores for BPE models).
  """
  backend: Backend
  path: str
  vocab_size: int
  bos_id: int | None
  eos_ids: tuple[int, ...]
  pad_id: int | None
  chat_template: str | None
  special_tokens: Mapping[str, str]
  add_bos: bool
  clean_up_spaces: bool = False

  def __post_init__(self):
    object.__setattr__(self, "eos_ids", tuple(int(i) for i in self.eos_ids))
    object.__setattr__(self, "special_tokens", types.MappingProxyType(dict(self.special_tokens)))

  def encode(self, text: str) -> list[int]:
    """The ids of `text`, with the special tokens the model adds (BOS where `add_bos`)."""
    return self.backend.encode(text).ids

  def decode(self, ids, skip_special_tokens: bool = True) -> str:
    """The text of `ids` (any int sequence or array), dropping special tokens unless asked."""
    text = self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
    return _clean_up_spaces(text) if self.clean_up_spaces else text

  def apply_chat_template(self, messages, add_generation_prompt: bool = True, **kwargs) -> str:
    """The chat rendered by the model's template, as transformers'
    `apply_chat_template(..., tokenize=False)`; `kwargs` reach the template."""
    if self.chat_template is None:
      raise ValueError(f"{self.path}: this tokenizer has no chat template; encode plain text "
                       f"instead of a chat")
    return chat.render_chat(self.chat_template, messages,
                            add_generation_prompt=add_generation_prompt,
                            **{**self.special_tokens, **kwargs})

  def encode_chat(self, messages, add_generation_prompt: bool = True, **kwargs) -> list[int]:
    """The ids of the rendered chat, adding no special tokens beyond those the template writes
    (as transformers' `apply_chat_template(..., tokenize=True)`)."""
    text = self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                    **kwargs)
    return self.backend.encode(text, add_special_tokens=False).ids


def _clean_up_spaces(text):
  """transformers' `clean_up_tokenization` (WordPiece-era spacing before punctuation)."""
  for before, after in [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                        (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"),
                        (" 're", "'re")]:
    text = text.replace(before, after)
  return text


def _read_json(path):
  if not os.path.isfile(path):
    return {}
  with open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from None


def _content(token):
  """A special token as a config writes it: a string or an AddedToken dict."""
  if isinstance(token, dict):
    return token.get("content")
  return token if isinstance(token, str) else None


def _ids(value):
  """An `eos_token_id` entry: an int, a list of ints, or absent."""
  if value is None:
    return []
  return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _chat_template(directory, config):
  """chat_template.jinja, else the config's template (its "default" one if it names several)."""
  path = os.path.join(directory, "chat_template.jinja")
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      return f.read()
  template = config.get("chat_template")
  if isinstance(template, list):  # [{"name": ..., "template": ...}]
    template = {t["name"]: t["template"] for t in template}.get("default")
  return template if isinstance(template, str) else None


def _id_count(backend):
  """Max id + 1: the ids an embedding table must cover (ids need not be contiguous)."""
  return max(backend.get_vocab(with_added_tokens=True).values(), default=-1) + 1


def _from_directory(directory: str) -> Tokenizer:
  file = os.path.join(directory, "tokenizer.json")
  if not os.path.isfile(file):
    raise FileNotFoundError(f"{directory}: no tokenizer.json in this model directory")
  try:
    backend = Backend.from_file(file)
  except Exception as e:  # the Rust side raises its own Exception type
    raise ValueError(f"{file}: not a tokenizers file ({e})") from None
  config = _read_json(os.path.join(directory, "tokenizer_config.json"))
  # As transformers: special_tokens_map.json is read only for a config that predates
  # `added_tokens_decoder`, and then it wins.
  legacy = ({} if "added_tokens_decoder" in config
            else _read_json(os.path.join(directory, "special_tokens_map.json")))
  named = {}
  for name in NAMED_TOKENS:
    content = _content(legacy[name]) if name in legacy else _content(config.get(name))
    if content is not None:
      named[name] = content
  extra = config.get("additional_special_tokens") or config.get("extra_special_tokens") or []
  extra = [_content(t) for t in (extra.values() if isinstance(extra, dict) else extra)]
  added = {t.content for t in backend.get_added_tokens_decoder().values()}
  missing = [t for t in dict.fromkeys([*named.values(), *extra])
             if t and t not in added and backend.token_to_id(t) is not None]
  backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in missing])

  def token_id(name):
    return backend.token_to_id(named[name]) if name in named else None

  model_config = _read_json(os.path.join(directory, "config.json"))
  eos = [*_ids(_read_json(os.path.join(directory, "generation_config.json")).get("eos_token_id")),
         *_ids(model_config.get("eos_token_id")),
         *_ids((model_config.get("text_config") or {}).get("eos_token_id")),
         *([token_id("eos_token")] if token_id("eos_token") is not None else [])]
  eos_ids = tuple(dict.fromkeys(eos))
  pad_id = token_id("pad_token")
  bos_id = token_id("bos_token")
  return Tokenizer(
      backend=backend, path=directory, vocab_size=_id_count(backend), bos_id=bos_id,
      eos_ids=eos_ids, pad_id=pad_id if pad_id is not None else (eos_ids or (None,))[0],
      chat_template=_chat_template(directory, config), special_tokens=named,
      add_bos=bos_id is not None and backend.encode("").ids[:1] == [bos_id],
      clean_up_spaces=bool(config.get("clean_up_tokenization_spaces", False))
      and type(backend.model).__name__ != "BPE")


def load_tokenizer(path) -> Tokenizer:
  """The tokenizer of a model directory (with a `tokenizer.json`) or of a `.gguf` file."""
  path = os.fspath(path)
  if os.path.isdir(path):
    return _from_directory(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such model directory or .gguf file")
  if not path.lower().endswith(".gguf"):
    raise ValueError(f"{path}: not a model directory or a .gguf file")
  fields = gguf_vocab.build(path)
  fields["vocab_size"] = max(fields["vocab_size"], _id_count(fields["backend"]))
  return Tokenizer(path=path, **fields)
