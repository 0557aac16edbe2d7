"""Autoregressive sampling with a KV cache, compiled whole: one prefill, then `lax.scan`.

The cache is kept in blocks along the positions: the prompt and the first `DECODE_BLOCK`
response slots, then `DECODE_BLOCK` slots each. The scan runs block by block, and a step reads
only the blocks up to its own, so a long response's early tokens do not attend over the empty
rest of the cache (about half the attention reads of one whole cache at T ≫ DECODE_BLOCK).

Every prompt has the same length P; the response has T = `max_new_tokens` slots. A row stops at
its first end token (kept, with mask 1: it is a generated, trained token); the slots after it
hold `pad_id` with mask 0. Behaviour log-probs come from `pg.token_log_probs` on the very logits
the token was drawn from, scaled by the same temperature the trainer uses, so ρ = 1 on-policy.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pg.core import _checks
from pg.core.logprobs import token_log_probs
from pg.policy.base import Policy

DECODE_BLOCK = 128  # response slots per cache block (one scan per block)


def cache_blocks(prompt_len: int, max_new_tokens: int, max_len: int):
  """The sampler's cache layout: `segments`, the [start, stop) response slots of each scan, and
  `sizes`, the positions of each cache block. Block j holds segment j's slots (block 0 also the
  prompt); the last block takes whatever of the model's context is left beyond the response."""
  segments = [(t, min(t + DECODE_BLOCK, max_new_tokens))
              for t in range(0, max_new_tokens, DECODE_BLOCK)] or [(0, 0)]
  sizes = [prompt_len + segments[0][1]] + [stop - start for start, stop in segments[1:]]
  sizes[-1] += max_len - sum(sizes)
  return segments, sizes


class Samples(NamedTuple):
  tokens_BxT: jax.Array     # int32 response tokens, pad after the end token
  logp_BxT: jax.Array       # float32 behaviour log-probs, 0 where masked
  mask_BxT: jax.Array       # float32, 1 on generated tokens (end token included)
  truncated_B: jax.Array    # bool, True where no end token was produced


def sample(policy: Policy, params, prompts_NxP, key, *, max_new_tokens: int, eos_id: int,
           pad_id: int, temperature=1.0, group_size: int = 1) -> Samples:
  """Samples `max_new_tokens` slots for each of `group_size` rows per prompt (B = N·G rows, a
  prompt's G samples consecutive); temperature may be traced.

  The prompt is run once (prefill over N rows) and its cache and last logits repeated G times:
  the same samples as passing every prompt G times (`jnp.repeat(prompts_NxP, G, axis=0)`) with
  group_size 1, for a G-th of the prefill's work.
  """
  fn = "sample"
  _checks.rank(fn, "prompts_NxP", prompts_NxP, 2)
  _checks.integer(fn, "prompts_NxP", prompts_NxP)
  if not isinstance(group_size, int) or group_size < 1:
    raise ValueError(f"{fn}: group_size must be a positive int, got {group_size!r}.")
  N, P = prompts_NxP.shape
  B = N * group_size
  if P + max_new_tokens > policy.max_len:
    raise ValueError(f"{fn}: prompt length {P} + max_new_tokens {max_new_tokens} exceeds the "
                     f"model's context model.max_len = {policy.max_len}.")
  decode = lambda tokens, pos, cache, block=0: policy.decode(params, tokens, pos, cache, block)
  segments, sizes = cache_blocks(P, max_new_tokens, policy.max_len)
  logits_NxPxV, cache = decode(prompts_NxP, 0, policy.init_cache(N, sizes))
  repeat = lambda x: jnp.repeat(x, group_size, axis=0) if group_size > 1 else x
  logits_Bx1xV, cache = repeat(logits_NxPxV[:, -1:]), jax.tree_util.tree_map(repeat, cache)

  def step(carry, t, block):
    cache, logits_BxV, done_B = carry
    y_B = jax.random.categorical(jax.random.fold_in(key, t),
                                 logits_BxV.astype(jnp.float32) / temperature).astype(jnp.int32)
    logp_B = token_log_probs(logits_BxV[:, None], y_B[:, None], temperature=temperature)[:, 0]
    live_B = ~done_B
    y_B = jnp.where(live_B, y_B, pad_id)
    mask_B = live_B.astype(jnp.float32)
    done_B = done_B | (y_B == eos_id)
    next_logits_Bx1xV, cache = decode(y_B[:, None], P + t, cache, block)
    return (cache, next_logits_Bx1xV[:, 0], done_B), (y_B, logp_B * mask_B, mask_B)

  carry = (cache, logits_Bx1xV[:, 0], jnp.zeros((B,), bool))
  outs = []
  for j, (start, stop) in enumerate(segments):
    carry, out = jax.lax.scan(lambda c, t, j=j: step(c, t, j), carry, jnp.arange(start, stop))
    outs.append(out)
  y_TxB, logp_TxB, mask_TxB = (jnp.concatenate(x, axis=0) for x in zip(*outs))
  return Samples(y_TxB.T, logp_TxB.T, mask_TxB.T, ~carry[2])
