"""Prompt batches: rows right-aligned with pads (mask 0) on the left, never truncated."""

import numpy as np
import pytest

from pg.text import encode_prompts, left_pad, load_tokenizer


def test_left_pad_right_aligns_rows():
  ids_NxP, mask_NxP = left_pad([[5, 6, 7], [8], []], pad_id=0)
  np.testing.assert_array_equal(ids_NxP, [[5, 6, 7], [0, 0, 8], [0, 0, 0]])
  np.testing.assert_array_equal(mask_NxP, [[1, 1, 1], [0, 0, 1], [0, 0, 0]])
  assert ids_NxP.dtype == np.int32 and mask_NxP.dtype == np.float32


def test_left_pad_to_a_given_length_and_from_arrays():
  ids_NxP, mask_NxP = left_pad([np.array([3, 4]), (9,)], pad_id=-1, length=4)
  np.testing.assert_array_equal(ids_NxP, [[-1, -1, 3, 4], [-1, -1, -1, 9]])
  np.testing.assert_array_equal(mask_NxP.sum(1), [2, 1])
  assert left_pad([], pad_id=0)[0].shape == (0, 0)
  assert left_pad([], pad_id=0, length=3)[1].shape == (0, 3)


def test_left_pad_refuses_a_row_longer_than_the_context():
  with pytest.raises(ValueError, match=r"prompt 1: prompt of 4 tokens is longer than the "
                                       r"context of 3 tokens"):
    left_pad([[1], [1, 2, 3, 4]], pad_id=0, length=3)
  with pytest.raises(ValueError, match="pad_id"):
    left_pad([[1]], pad_id=None)


def test_encode_prompts_mixes_text_and_chats(make_model_dir):
  tok = load_tokenizer(make_model_dir())
  chat = [{"role": "user", "content": "Hi there"}]
  ids_NxP, mask_NxP = encode_prompts(tok, ["Hello world", chat])
  text_ids, chat_ids = tok.encode("Hello world"), tok.encode_chat(chat)
  P = len(chat_ids)
  assert ids_NxP.shape == (2, P) and P > len(text_ids)
  assert ids_NxP[0, P - len(text_ids):].tolist() == text_ids
  assert set(ids_NxP[0, :P - len(text_ids)].tolist()) == {tok.pad_id}
  assert ids_NxP[1].tolist() == chat_ids
  assert mask_NxP.sum(1).tolist() == [len(text_ids), P]
  assert tok.decode(ids_NxP[1]).endswith("assistant\n")  # the assistant's turn is opened


def test_encode_prompts_errors(make_model_dir):
  tok = load_tokenizer(make_model_dir())
  with pytest.raises(ValueError, match="prompt 0: prompt of .* longer than the context of 2"):
    encode_prompts(tok, ["a much longer prompt than two tokens"], length=2)
  with pytest.raises(TypeError, match="a list of prompts"):
    encode_prompts(tok, [{"role": "user", "content": "one chat, not a list of chats"}])
  with pytest.raises(TypeError, match=r"texts_or_chats\[1\]"):
    encode_prompts(tok, ["fine", 42])
