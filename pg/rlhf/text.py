"""English text for the RLHF pipeline: a corpus that installs with Python, a byte-level BPE
tokenizer trained on it with `tokenizers`, and chat prompts for a pretrained chat model.

The corpus is the documentation that ships with CPython in `pydoc_data.topics` (the Python
reference manual's topics; PSF licence): about 80k words, nothing to download; each topic is a
document, code-like lines dropped. The tokenizer is byte-level BPE (GPT-2's scheme: any text
encodes, decoding gives it back) with two special tokens, END (after each document; the end
token) and PAD, saved as a Hugging Face tokenizer directory that `pg.text.load_tokenizer` reads.
"""

from __future__ import annotations

import json
import os

import numpy as np

END, PAD = "<|endoftext|>", "<pad>"
SPECIALS = (END, PAD)

# "Write one sentence about {topic}." for a chat model's preference prompts.
TOPICS = ("the weather today", "a movie you saw", "your neighbour", "a trip to the sea",
          "a new phone", "the city at night", "a rainy Monday", "a birthday party", "homework",
          "the traffic", "a long queue", "a dog", "a cat", "breakfast", "a football match",
          "an old car", "a museum", "winter", "a job interview", "a train delay", "a garden",
          "a concert", "a hospital visit", "the news", "a mountain hike", "a noisy hotel",
          "a library", "a broken laptop", "a restaurant", "moving house", "a school exam",
          "a summer holiday", "a lost wallet", "a wedding", "a storm", "a first day at work",
          "a book you read", "a power cut", "a coffee shop", "a bicycle ride", "a dentist",
          "a supermarket", "a video game", "a flight", "a river", "an airport", "a haircut",
          "a neighbour's party", "a cold", "Sunday afternoon")


def documents() -> list:
  """The pydoc topics, one document each, with code-like lines (indented or symbol-heavy)
  dropped; empty documents left out."""
  import pydoc_data.topics
  docs = []
  for text in pydoc_data.topics.topics.values():
    lines = []
    for line in text.splitlines():
      stripped = line.strip()
      if not stripped or line.startswith("   ") or sum(c.isalpha() for c in stripped) < 0.7 * len(
          stripped):
        continue
      lines.append(stripped)
    if lines:
      docs.append("\n".join(lines))
  return docs


def corpus_text() -> str:
  return "\n".join(documents())


def train_tokenizer(docs, vocab_size: int, out_dir: str) -> str:
  """Trains byte-level BPE with `vocab_size` ids (the 256 bytes, END, PAD and merges) on `docs`
  and writes `out_dir`/tokenizer.json and tokenizer_config.json (END the eos token, PAD the pad
  token). Returns `out_dir`."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  minimum = 256 + len(SPECIALS)
  if vocab_size <= minimum:
    raise ValueError(f"config.rlhf.vocab_size must exceed {minimum} (256 bytes and the special "
                     f"tokens {SPECIALS}) for a byte-level BPE, got {vocab_size}.")
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  if not docs:
    raise ValueError("the corpus is empty: no documents to train the tokenizer and π_ref on.")
  tok.train_from_iterator(docs, trainer)
  if tok.get_vocab_size() < vocab_size:
    n = tok.get_vocab_size()
    raise ValueError(f"config.rlhf.vocab_size must be at most {n} for this corpus (256 bytes, "
                     f"{len(SPECIALS)} special tokens and {n - minimum} merges), got "
                     f"{vocab_size}.")
  os.makedirs(out_dir, exist_ok=True)
  tok.save(os.path.join(out_dir, "tokenizer.json"))
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump({"eos_token": END, "pad_token": PAD, "add_bos_token": False,
               "clean_up_tokenization_spaces": False, "tokenizer_class": "PreTrainedTokenizerFast"},
              f, indent=2)
  return out_dir


def encode_corpus(tokenizer, docs) -> np.ndarray:
  """The documents' ids, each followed by the end token, as one stream."""
  end = tokenizer.eos_ids[0]
  ids = []
  for doc in docs:
    ids.extend(tokenizer.encode(doc))
    ids.append(end)
  return np.asarray(ids, np.int32)


def chat_prompts() -> list:
  """One user message per topic: 'Write one sentence about {topic}.'"""
  return [[{"role": "user", "content": f"Write one sentence about {t}."}] for t in TOPICS]


def windows(ids: np.ndarray, length: int, stride: int) -> np.ndarray:
  """Overlapping token windows `[N, length]` of a token stream."""
  if len(ids) < length:
    raise ValueError(f"the corpus has {len(ids)} tokens, fewer than one window of {length}.")
  starts = np.arange(0, len(ids) - length + 1, stride)
  return np.stack([ids[s:s + length] for s in starts])
