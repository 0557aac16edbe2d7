"""Prompt batches: token rows left-padded to one length, so every prompt ends at the same column
and generation continues from there for the whole batch.

    ids_NxP, mask_NxP = encode_prompts(tok, ["The sky is", [{"role": "user", "content": "Hi"}]])

Row n holds its prompt in the last len(prompt) columns (mask 1.0) and `pad_id` before it
(mask 0.0).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def left_pad(ids_list, pad_id: int, length: int | None = None):
  """Left-pad rows of token ids to `length` (default: the longest row).

  Args:
    ids_list: N rows, each a sequence of ints (rows may be empty).
    pad_id: the id written before each row.
    length: P, the padded length; a row longer than P is an error, never truncated.

  Returns:
    ids_NxP int32, mask_NxP float32 (1.0 on prompt tokens, 0.0 on pads).
  """
  if pad_id is None:
    raise ValueError("pad_id: None; a batch needs a pad id (the tokenizer has no pad or eos)")
  rows = [np.asarray(row, dtype=np.int64).reshape(-1) for row in ids_list]
  longest = max((len(r) for r in rows), default=0)
  if length is None:
    length = longest
  if length < 0:
    raise ValueError(f"length: {length}; must be >= 0")
  ids_NxP = np.full((len(rows), length), pad_id, dtype=np.int32)
  mask_NxP = np.zeros((len(rows), length), dtype=np.float32)
  for n, row in enumerate(rows):
    if len(row) > length:
      raise ValueError(f"prompt {n}: prompt of {len(row)} tokens is longer than the context of "
                       f"{length} tokens")
    if len(row):
      ids_NxP[n, length - len(row):] = row
      mask_NxP[n, length - len(row):] = 1.0
  return ids_NxP, mask_NxP


def encode_prompts(tokenizer, texts_or_chats, length: int | None = None):
  """Encode and left-pad prompts: a string is encoded as text (`tokenizer.encode`), a chat (a
  list of message dicts) through the chat template with the assistant's turn opened
  (`tokenizer.encode_chat`). Pads with `tokenizer.pad_id`.

  Returns:
    ids_NxP int32, mask_NxP float32, as `left_pad`.
  """
  if isinstance(texts_or_chats, str) or (
      texts_or_chats and isinstance(texts_or_chats[0], dict)):
    raise TypeError("texts_or_chats: pass a list of prompts (strings or chats), not one prompt")
  rows = []
  for n, prompt in enumerate(texts_or_chats):
    if isinstance(prompt, str):
      rows.append(tokenizer.encode(prompt))
    elif isinstance(prompt, (list, tuple)):
      rows.append(tokenizer.encode_chat(list(prompt)))
    else:
      raise TypeError(f"texts_or_chats[{n}]: a prompt is a string or a list of message dicts, "
                      f"got {type(prompt).__name__}")
  if tokenizer.pad_id is None:
    raise ValueError(f"{tokenizer.path}: no pad id (no pad token and no eos) to batch prompts with")
  return left_pad(rows, tokenizer.pad_id, length)


def left_pad_mask(ids_NxP, pad_id: int):
  """float32 `[N, P]`: 1 from each row's first id that is not `pad_id` on, 0 on the leading run
  of `pad_id` (a row may hold the id after its first token). Traceable."""
  real_NxP = (ids_NxP != pad_id).astype(jnp.int32)
  return (jnp.cumsum(real_NxP, axis=-1) > 0).astype(jnp.float32)


def response_ids(tokens_T, mask_T, stop_ids) -> tuple[list, bool]:
  """(the ids of one sampled response before its end token, whether it ended): reading stops
  at the first masked slot or the first id in `stop_ids`."""
  ids = []
  for t, m in zip(tokens_T, mask_T):
    if m <= 0:
      return ids, False
    if int(t) in stop_ids:
      return ids, True
    ids.append(int(t))
  return ids, False
