"""A checkpoint with its tokenizer (`pg.policy.generate`): log-likelihoods from the reference's
logits, chats answered through the template with every end-of-turn token stopping a row, and
the refusals (a tokenizer the embeddings do not cover, prompts that leave no room)."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
import tokenizers

from pg.policy import generate

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "hf", "llama")


@pytest.fixture(scope="module")
def model():
  return generate.load_pretrained(FIXTURE, max_len=48)


def test_log_likelihood_is_the_references(model):
  e = np.load(os.path.join(FIXTURE, "expected.npz"))
  ids = e["ids_single"][0]
  logp = jax.nn.log_softmax(e["logits_single"][0, :-1], axis=-1)
  want = float(np.mean(np.take_along_axis(np.asarray(logp), ids[1:, None], axis=-1)))
  assert generate.mean_log_likelihood(model, model.params, ids) == pytest.approx(want, abs=1e-5)


def test_chats_are_answered_through_the_template_and_stop_at_end_of_turn(model):
  chats = [[{"role": "user", "content": "the policy gradient"}],
           [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a"}]]
  ids, mask = generate.encode(model, chats)
  first = model.tokenizer.encode_chat(chats[0])
  assert ids.shape[0] == 2 and list(np.asarray(ids[0])[-len(first):]) == first
  assert float(mask[0].sum()) == len(first)
  answers = generate.generate(model, chats, max_new_tokens=12)
  assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
  assert model.tokenizer.eos_ids == (2, 0)  # generation_config's list: both stop a row


def test_a_tokenizer_the_embeddings_do_not_cover_is_refused(tmp_path):
  tok = tokenizers.Tokenizer.from_file(os.path.join(FIXTURE, "tokenizer.json"))
  tok.add_tokens([f"extra{i}" for i in range(12)])  # 212 ids, 200 embedding rows
  shutil.copytree(FIXTURE, tmp_path / "m")
  tok.save(str(tmp_path / "m" / "tokenizer.json"))
  with pytest.raises(ValueError, match=r"212 ids\) does not fit the checkpoint's embeddings "
                                       r"\(200 rows\)"):
    generate.load_pretrained(str(tmp_path / "m"), max_len=16)


def test_a_missing_tokenizer_is_named(tmp_path):
  shutil.copytree(FIXTURE, tmp_path / "m")
  os.remove(tmp_path / "m" / "tokenizer.json")
  with pytest.raises(FileNotFoundError, match="tokenizer.json"):
    generate.load_pretrained(str(tmp_path / "m"), max_len=16)


def test_a_prompt_longer_than_the_context_is_refused(model):
  long_chat = [[{"role": "user", "content": "policy " * 40}]]
  with pytest.raises(ValueError, match="context|max_len"):
    generate.generate(model, long_chat, max_new_tokens=4)
  with pytest.raises(ValueError, match="max_new_tokens = 40 does not fit"):
    generate.generate(model, [[{"role": "user", "content": "a"}]], max_new_tokens=40)


def test_the_fixture_tokenizer_declares_its_stop_tokens():
  with open(os.path.join(FIXTURE, "generation_config.json")) as f:
    assert json.load(f)["eos_token_id"] == [2, 0]
