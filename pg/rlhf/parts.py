"""What the RLHF pipeline's stages share: where π_ref is, its tokenizer, the policies built on
it, the prompts and the gold scorer.

π_ref is a Hugging Face model directory: the one the pretrain stage writes (`<workdir>/pi_ref`,
a Llama-family model with the byte-level BPE trained on the corpus), or a checkpoint of your own
(`config.rlhf.pi_ref`: a directory or a .gguf, e.g. SmolLM2-135M-Instruct). Every later stage
loads it through `config.model.init_from`, the path a user's checkpoint takes.

Prompts (`config.rlhf.prompts`): "corpus", the first `prompt_len` tokens of windows of the
corpus (every row the same length); or "chat", 'Write one sentence about {topic}.' through the
tokenizer's chat template, left-padded to `prompt_len` with a mask.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from pg import text as text_lib
from pg.policy import build_policy
from pg.rlhf import text
from pg.tasks.text import left_pad_id

PROMPT_SOURCES = ("corpus", "chat")


def path(workdir, name):
  return os.path.join(workdir, name)


def pi_ref_path(config, workdir) -> str:
  return config.rlhf.get("pi_ref") or path(workdir, "pi_ref")


def tokenizer(config, workdir):
  return text_lib.load_tokenizer(pi_ref_path(config, workdir))


def ids(tok):
  """(eos ids, pad id) of π_ref's tokenizer: responses end at any eos id; `pad` fills the
  slots after it."""
  eos = tuple(tok.eos_ids)
  return eos, (tok.pad_id if tok.pad_id is not None else eos[0])


def masked_ids(tok) -> tuple:
  """A pad token that is not also an end token is never emitted (the pipeline's own BPE)."""
  eos, pad = ids(tok)
  return () if pad in eos else (pad,)


def make_policy(config, workdir, value_head="none", tok=None):
  """π_ref's architecture (from its checkpoint, config.model's other fields) at the pipeline's
  context: π_ref (no value head) or the reward model (`value_head="shared"`: a scalar head on
  π_ref's trunk). `pg.policy.generate.pretrained_tree(policy)` gives its weights. `tok`: π_ref's
  tokenizer, when the caller has loaded it already."""
  tok = tok if tok is not None else tokenizer(config, workdir)
  model = {**config.model.to_dict(), "value_head": value_head,
           "init_from": pi_ref_path(config, workdir)}
  return build_policy(model, vocab_size=tok.vocab_size,
                      max_len=config.rlhf.prompt_len + config.rlhf.response_len,
                      masked_ids=masked_ids(tok))


def corpus_windows(tok, length: int) -> np.ndarray:
  """Overlapping `[N, length]` windows of the corpus in `tok`'s ids."""
  return text.windows(text.encode_corpus(tok, text.documents()), length,
                      stride=max(1, length // 3))


class Prompts:
  """The prompt table `ids_NxP` (int32) and, for left-padded prompts, the id they are padded
  with (`pad_id`; None: every token real)."""

  def __init__(self, config, tok):
    r = config.rlhf
    P = r.prompt_len
    if r.get("prompts", "corpus") == "corpus":
      self.ids_NxP = corpus_windows(tok, P + r.response_len)[:, :P]
      self.pad_id = None
    else:
      rows = [tok.encode_chat(m) for m in text.chat_prompts()]
      longest = max(len(row) for row in rows)
      if longest > P:
        raise ValueError(f"config.rlhf.prompt_len = {P}: the chat prompts take up to {longest} "
                         f"tokens with π_ref's chat template; raise it.")
      self.pad_id = left_pad_id(rows, ids(tok)[1], tok.vocab_size)
      self.ids_NxP, _ = text_lib.left_pad(rows, self.pad_id, P)

  def mask(self, prompts_NxP):
    """float32 mask of left-padded prompts (1 from the first non-pad token on), or None."""
    if self.pad_id is None:
      return None
    return text_lib.left_pad_mask(prompts_NxP, self.pad_id)

  def sample(self, key, n):
    table = jnp.asarray(self.ids_NxP)
    return table[jax.random.randint(key, (n,), 0, table.shape[0])]


def response_text(tok, tokens_T, mask_T=None) -> str:
  """A response decoded up to (not including) its end token."""
  tokens_T = np.asarray(tokens_T)
  mask_T = np.ones(tokens_T.shape) if mask_T is None else np.asarray(mask_T)
  return tok.decode(text_lib.response_ids(tokens_T, mask_T, ids(tok)[0])[0])


def gold_scorer():
  """VADER's compound sentiment in [−1, 1] of a text (rule-based; nobody backpropagates it)."""
  from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
  analyzer = SentimentIntensityAnalyzer()
  return lambda s: float(analyzer.polarity_scores(s)["compound"])
