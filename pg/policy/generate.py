"""A pretrained model with its tokenizer: load it, answer chats, measure perplexity.

    model = load_pretrained("/path/to/model_dir" or "file.gguf", max_len=512)
    generate(model, [[{"role": "user", "content": "What is 2 + 2?"}]], max_new_tokens=32)
    perplexity(model, "Some held-out English text.")

Chats go through the tokenizer's chat template, plain strings are encoded as they are; the rows
are left-padded (`pg.text.left_pad`) and sampled (or decoded greedily) by `pg.policy.sampler`,
stopping at every end-of-turn token the model declares.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from pg import text
from pg.policy import sampler
from pg.policy.base import Policy, build_policy


class Pretrained(NamedTuple):
  policy: Policy
  params: dict
  tokenizer: text.Tokenizer


def load_pretrained(path: str, *, max_len: int, dtype: str = "float32",
                    tokenizer_path: Optional[str] = None) -> Pretrained:
  """The "llama" policy, its checkpoint's weights (on the default device) and its tokenizer
  (from `tokenizer_path`, default the checkpoint itself). A tokenizer whose ids the embeddings
  do not cover is refused, naming both sizes."""
  tokenizer = text.load_tokenizer(tokenizer_path or path)
  policy = build_policy({"name": "llama", "init_from": path, "dtype": dtype}, vocab_size=1,
                        max_len=max_len)  # the checkpoint sets the vocabulary
  if tokenizer.vocab_size > policy.vocab_size:
    raise ValueError(f"the tokenizer of {tokenizer_path or path!r} ({tokenizer.vocab_size} ids) "
                     f"does not fit the checkpoint's embeddings ({policy.vocab_size} rows).")
  return Pretrained(policy, pretrained_tree(policy), tokenizer)


def pretrained_tree(policy, key=None):
  """The policy's checkpoint weights in its full parameter tree, on the default device; a value
  head, if it has one, freshly initialised with `key` (default PRNGKey(0))."""
  if policy.has_values:
    fresh = policy.init(jax.random.PRNGKey(0) if key is None else key)
  else:  # nothing fresh: the shapes alone
    fresh = jax.eval_shape(policy.init, jax.ShapeDtypeStruct((2,), jnp.uint32))
  return jax.tree_util.tree_map(jnp.asarray, policy.warm_start(fresh, policy.pretrained_params()))


def encode(model: Pretrained, prompts) -> tuple[jax.Array, jax.Array]:
  """Left-padded ids `[N, P]` and mask of chats (lists of messages) or strings."""
  ids_NxP, mask_NxP = text.encode_prompts(model.tokenizer, prompts)
  if ids_NxP.shape[1] >= model.policy.max_len:
    raise ValueError(f"a prompt of {ids_NxP.shape[1]} tokens leaves no room to answer in the "
                     f"model's context of max_len = {model.policy.max_len}.")
  return jnp.asarray(ids_NxP), jnp.asarray(mask_NxP)


@functools.partial(jax.jit, static_argnames=("policy", "max_new_tokens", "eos_ids", "pad_id",
                                             "greedy"))
def _sample(params, ids_NxP, mask_NxP, key, temperature, *, policy, max_new_tokens, eos_ids,
            pad_id, greedy):
  """The sampler, compiled once per model, shape and length (repeated calls reuse it)."""
  return sampler.sample(policy, params, ids_NxP, key, max_new_tokens=max_new_tokens,
                        eos_id=eos_ids[0], eos_ids=eos_ids, pad_id=pad_id,
                        temperature=temperature, greedy=greedy, prompt_mask_NxP=mask_NxP)


def generate(model: Pretrained, prompts, *, max_new_tokens: int, key=None,
             temperature: float = 1.0, greedy: bool = False) -> list[str]:
  """Each prompt's answer, decoded up to (not including) its end-of-turn token. Greedy when
  `greedy` or no `key` is given."""
  ids_NxP, mask_NxP = encode(model, prompts)
  budget = model.policy.max_len - ids_NxP.shape[1]
  if max_new_tokens > budget:
    raise ValueError(f"max_new_tokens = {max_new_tokens} does not fit: the longest prompt has "
                     f"{ids_NxP.shape[1]} tokens and max_len is {model.policy.max_len}.")
  eos = model.tokenizer.eos_ids
  pad = model.tokenizer.pad_id if model.tokenizer.pad_id is not None else eos[0]
  samples = _sample(model.params, ids_NxP, mask_NxP,
                    jax.random.PRNGKey(0) if key is None else key, jnp.float32(temperature),
                    policy=model.policy, max_new_tokens=max_new_tokens, eos_ids=tuple(eos),
                    pad_id=pad, greedy=greedy or key is None)
  tokens, mask = np.asarray(samples.tokens_BxT), np.asarray(samples.mask_BxT)
  out = []
  for row, m in zip(tokens, mask):
    ids = [int(t) for t, keep in zip(row, m) if keep and int(t) not in eos]
    out.append(model.tokenizer.decode(ids))
  return out


def mean_log_likelihood(model: Pretrained, params, ids_T) -> float:
  """Mean log p(x_t | x_<t) over t ≥ 1 of one token sequence, in nats."""
  ids_1xT = jnp.asarray(ids_T, jnp.int32)[None]
  if ids_1xT.shape[1] > model.policy.max_len:
    raise ValueError(f"{ids_1xT.shape[1]} tokens exceed max_len = {model.policy.max_len}.")
  logits, _ = jax.jit(model.policy.sequence_outputs)(params, ids_1xT)
  logp = jax.nn.log_softmax(logits[0, :-1].astype(jnp.float32), axis=-1)
  return float(jnp.mean(jnp.take_along_axis(logp, ids_1xT[0, 1:, None], axis=-1)))


def perplexity(model: Pretrained, passage: str, params=None) -> float:
  """exp(−mean log-likelihood) of `passage` (encoded as plain text) under `params` (default:
  the model's own)."""
  ids = model.tokenizer.encode(passage)
  return math.exp(-mean_log_likelihood(model, model.params if params is None else params, ids))
