"""English text for the RLHF pipeline: a corpus that installs with Python, and a word vocabulary.

The corpus is the documentation that ships with CPython in `pydoc_data.topics` (the Python
reference manual's topics; PSF licence): about 80k words, nothing to download. Tokens are
lower-cased words and punctuation; the vocabulary keeps the most frequent `vocab_size − 3`
forms plus <unk>, <end> and <pad>. Words keep their spelling, so decoded text reads as text and a
word-level scorer (VADER) sees real words.
"""

from __future__ import annotations

import collections
import dataclasses
import re

import numpy as np

SPECIALS = ("<unk>", "<end>", "<pad>")
_TOKEN = re.compile(r"[a-z]+|[.,;:!?()]")


def corpus_text() -> str:
  """The pydoc topics, joined, with code-like lines (indented or symbol-heavy) dropped."""
  import pydoc_data.topics
  lines = []
  for text in pydoc_data.topics.topics.values():
    for line in text.splitlines():
      stripped = line.strip()
      if not stripped or line.startswith("   ") or sum(c.isalpha() for c in stripped) < 0.7 * len(
          stripped):
        continue
      lines.append(stripped)
  return "\n".join(lines)


def words(text: str) -> list:
  return _TOKEN.findall(text.lower())


@dataclasses.dataclass(frozen=True)
class Vocab:
  forms: tuple  # index -> form; SPECIALS first

  @property
  def size(self) -> int:
    return len(self.forms)

  @property
  def unk_id(self) -> int:
    return 0

  @property
  def eos_id(self) -> int:
    return 1

  @property
  def pad_id(self) -> int:
    return 2

  def encode(self, text: str) -> np.ndarray:
    index = {w: i for i, w in enumerate(self.forms)}
    return np.asarray([index.get(w, self.unk_id) for w in words(text)], np.int32)

  def decode(self, ids, stop_at_end: bool = True) -> str:
    out = []
    for i in np.asarray(ids).tolist():
      if stop_at_end and i == self.eos_id:
        break
      if i != self.pad_id:
        out.append(self.forms[i])
    return re.sub(r" ([.,;:!?)])", r"\1", " ".join(out)).replace("( ", "(")


def build_vocab(text: str, vocab_size: int) -> Vocab:
  if vocab_size <= len(SPECIALS):
    raise ValueError(f"vocab_size must exceed {len(SPECIALS)}, got {vocab_size}.")
  counts = collections.Counter(words(text))
  if not counts:
    raise ValueError("the corpus is empty: no words to build a vocabulary from.")
  if vocab_size > len(counts) + len(SPECIALS):  # ids past the last form would decode to nothing
    raise ValueError(f"vocab_size must be at most {len(counts) + len(SPECIALS)} for this corpus "
                     f"({len(counts)} distinct words + {len(SPECIALS)} special tokens), got "
                     f"{vocab_size}.")
  common = [w for w, _ in counts.most_common(vocab_size - len(SPECIALS))]
  return Vocab(SPECIALS + tuple(common))


def windows(ids: np.ndarray, length: int, stride: int) -> np.ndarray:
  """Overlapping token windows `[N, length]` of a token stream."""
  if len(ids) < length:
    raise ValueError(f"the corpus has {len(ids)} tokens, fewer than one window of {length}.")
  starts = np.arange(0, len(ids) - length + 1, stride)
  return np.stack([ids[s:s + length] for s in starts])
