"""A byte-level BPE tokenizer rebuilt from a GGUF file's metadata.

A GGUF carries no `tokenizer.json`: llama.cpp stores the vocabulary, the merges, each token's
type and the special ids under `tokenizer.ggml.*`. For `tokenizer.ggml.model == "gpt2"` this
rebuilds what transformers builds (`integrations/gguf/gguf_tokenizer_mapping.py`): a BPE over the
tokens (respelled into the byte alphabet where the file spells one otherwise) and the merges, a
byte-level decoder, the tokens marked control (type 3) as special added tokens (those outside
the byte alphabet are llama.cpp mislabels and are skipped), user-defined ones (type 4) as plain
added tokens, and a BOS/EOS post-processor from `add_bos_token` / `add_eos_token`.

The pre-tokenizer follows `tokenizer.ggml.pre`: transformers' table of split regexes, plus the
StarCoder family (`smollm`, `starcoder`, ...), which llama.cpp splits every digit off first, as
those models' own `tokenizer.json` does (`Digits(individual_digits=True)`). transformers has no
entry for that family and falls back to plain GPT-2 splitting, which tokenizes a run of spaces
before a digit differently ("  1": ours and the model's `ĠĠ 1`, transformers' `Ġ Ġ 1`). Any
other name gets GPT-2's split.

Only the metadata is read, never the tensors (SmolLM2-135M's tokenizer loads in about 0.2 s;
`gguf.GGUFReader` alone takes 1.7 s to index that file).
"""

from __future__ import annotations

import functools
import struct

import gguf
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend

_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN35 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
           r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
           r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
           r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT4O = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
          r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
          r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
          r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
          r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
DIGITS = "digits"  # every digit its own piece, then GPT-2's split

SPLITS = {
    **dict.fromkeys(["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                     "midm-2.0", "lfm2", "jina-v5-nano", "dbrx", "smaug-bpe"], _LLAMA3),
    "tekken": _TEKKEN,
    **dict.fromkeys(["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"], _QWEN2),
    "qwen35": _QWEN35,
    **dict.fromkeys(["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"], _GPT4O),
    **dict.fromkeys(["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone",
                     "minerva"], DIGITS),
}

_FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
          12: "d"}
_STRING, _ARRAY = int(gguf.GGUFValueType.STRING), int(gguf.GGUFValueType.ARRAY)
_CONTROL, _USER_DEFINED = int(gguf.TokenType.CONTROL), int(gguf.TokenType.USER_DEFINED)


class _Reader:
  """Little-endian reads from the start of a GGUF file."""

  def __init__(self, f):
    self.f = f

  def take(self, fmt):
    size = struct.calcsize("<" + fmt)
    data = self.f.read(size)
    if len(data) != size:
      raise EOFError("the file ends inside its metadata")
    return struct.unpack("<" + fmt, data)

  def string(self):
    (n,) = self.take("Q")
    return self.f.read(n).decode("utf-8")

  def value(self, kind):
    if kind == _STRING:
      return self.string()
    if kind == _ARRAY:
      item, n = self.take("IQ")
      if item == _STRING:
        return [self.string() for _ in range(n)]
      if item not in _FIXED:
        raise ValueError(f"array of value type {item}")
      return list(self.take(f"{n}{_FIXED[item]}"))
    if kind not in _FIXED:
      raise ValueError(f"value type {kind}")
    return self.take(_FIXED[kind])[0]


def read_metadata(path: str) -> dict:
  """The key/value metadata of the GGUF file at `path` (not the tensors)."""
  with open(path, "rb") as f:
    r = _Reader(f)
    try:
      magic, version = r.take("II")
      if magic != gguf.GGUF_MAGIC:
        raise ValueError("no GGUF magic number")
      if version < 2:
        raise ValueError(f"GGUF version {version} (need 2 or later)")
      _, count = r.take("QQ")
      metadata = {}
      for _ in range(count):
        key = r.string()
        (kind,) = r.take("I")
        metadata[key] = r.value(kind)
    except (EOFError, ValueError, UnicodeDecodeError, struct.error) as e:
      raise ValueError(f"{path}: not a readable GGUF file ({e})") from None
  return metadata


@functools.lru_cache(maxsize=1)
def byte_spelling() -> dict:
  """GPT-2's byte → printable character table: the alphabet byte-level BPE tokens use."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
               *range(ord("®"), ord("ÿ") + 1)]
  others = [b for b in range(256) if b not in printable]
  return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


def pre_tokenizer(pre: str | None):
  """The pre-tokenizer for a file's `tokenizer.ggml.pre` (GPT-2's split when unknown)."""
  split = SPLITS.get(pre)
  gpt2 = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if split is None:
    return gpt2
  if split == DIGITS:
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), gpt2])
  return pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(split), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def _id(metadata, key, tokens, path):
  token_id = metadata.get(f"tokenizer.ggml.{key}")
  if token_id is None:
    return None
  if not 0 <= token_id < len(tokens):
    raise ValueError(f"{path}: tokenizer.ggml.{key} = {token_id} is outside the "
                     f"{len(tokens)} tokens")
  return int(token_id)


def _bos_eos_template(named, ids, add_bos, add_eos):
  """transformers' post-processor: `bos $A eos` (each end only when the file asks for it)."""
  def one(seq, type_id):
    return ([f"{named['bos_token']}:{type_id}"] if add_bos else []) + [f"${seq}:{type_id}"] + (
        [f"{named['eos_token']}:{type_id}"] if add_eos else [])
  special = ([(named["bos_token"], ids["bos"])] if add_bos else []) + (
      [(named["eos_token"], ids["eos"])] if add_eos else [])
  return processors.TemplateProcessing(single=one("A", 0), pair=one("A", 0) + one("B", 1),
                                       special_tokens=special)


def build(path: str) -> dict:
  """The tokenizer the GGUF file at `path` describes, as the fields of `pg.text.Tokenizer`
  (all but `path`): the backend, ids, special tokens, chat template."""
  metadata = read_metadata(path)
  model = metadata.get("tokenizer.ggml.model")
  if model != "gpt2":
    raise ValueError(f"{path}: tokenizer.ggml.model is {model!r}; only 'gpt2' (byte-level BPE) "
                     f"tokenizers can be built from a GGUF")
  for key in ("tokens", "merges"):
    if f"tokenizer.ggml.{key}" not in metadata:
      raise ValueError(f"{path}: no tokenizer.ggml.{key} in the metadata")
  tokens = metadata["tokenizer.ggml.tokens"]
  types = metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens)
  spelling = byte_spelling()
  alphabet = set(spelling.values())
  vocab = {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
           for i, t in enumerate(tokens)}
  merges = []
  for i, merge in enumerate(metadata["tokenizer.ggml.merges"]):
    pair = tuple(merge.split(" "))
    if len(pair) != 2:
      raise ValueError(f"{path}: tokenizer.ggml.merges[{i}] = {merge!r} is not two tokens")
    merges.append(pair)
  backend = Backend(models.BPE(vocab=vocab, merges=merges, dropout=None,
                               continuing_subword_prefix="", end_of_word_suffix="",
                               fuse_unk=False))
  backend.pre_tokenizer = pre_tokenizer(metadata.get("tokenizer.ggml.pre"))
  backend.decoder = decoders.ByteLevel()

  ids = {name: _id(metadata, key, tokens, path) for name, key in
         [("bos", "bos_token_id"), ("eos", "eos_token_id"), ("eot", "eot_token_id"),
          ("eom", "eom_token_id"), ("unk", "unknown_token_id"), ("pad", "padding_token_id")]}
  named = {f"{name}_token": tokens[ids[name]] for name in ("bos", "eos", "unk", "pad")
           if ids[name] is not None}
  control = [t for t, kind in zip(tokens, types) if kind == _CONTROL and set(t) <= alphabet]
  special = list(dict.fromkeys(control + [t for t in named.values() if t in vocab]))
  backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special])
  backend.add_tokens([AddedToken(t, normalized=False, special=False)
                      for t, kind in zip(tokens, types) if kind == _USER_DEFINED and t in vocab])

  add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", False)) and ids["bos"] is not None
  add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token", False)) and ids["eos"] is not None
  backend.post_processor = _bos_eos_template(named, ids, add_bos, add_eos)

  eos_ids = tuple(dict.fromkeys(ids[k] for k in ("eos", "eot", "eom") if ids[k] is not None))
  return dict(
      backend=backend,
      vocab_size=len(tokens),
      bos_id=ids["bos"], eos_ids=eos_ids,
      pad_id=ids["pad"] if ids["pad"] is not None else (eos_ids[0] if eos_ids else None),
      chat_template=metadata.get("tokenizer.chat_template"),
      special_tokens=named, add_bos=add_bos)
