"""Autoregressive sampling with a KV cache, compiled whole: one prefill, then `lax.scan`.

The cache is kept in blocks along the positions: the prompt and the first `DECODE_BLOCK`
response slots, then `DECODE_BLOCK` slots each. The scan runs block by block, and a step reads
only the blocks up to its own, so a long response's early tokens do not attend over the empty
rest of the cache (about half the attention reads of one whole cache at T ≫ DECODE_BLOCK).

Prompts are P slots long; rows of different lengths are left-padded, with `prompt_mask_NxP`
(1 on real tokens) for a policy that `takes_prompt_mask`. The response has T = `max_new_tokens`
slots. A row stops at
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
           pad_id: int, temperature=1.0, group_size: int = 1, prompt_mask_NxP=None,
           eos_ids=(), greedy: bool = False, constrain=None,
           stop_early: bool = True) -> Samples:
  """Samples `max_new_tokens` slots for each of `group_size` rows per prompt (B = N·G rows, a
  prompt's G samples consecutive); temperature may be traced.

  The prompt is run once (prefill over N rows) and its cache and last logits repeated G times:
  the same samples as passing every prompt G times (`jnp.repeat(prompts_NxP, G, axis=0)`) with
  group_size 1, for a G-th of the prefill's work. `prompt_mask_NxP`: 1 on each left-padded
  row's real tokens (None: all real). A row stops at `eos_id` or any of `eos_ids` (a chat
  model's end-of-turn tokens). `greedy`: the most likely token at each step instead of a draw
  (evaluation, parity with a reference); its log-prob is still at `temperature`.

  `key` is one PRNG key for the whole batch, or one per prompt (`[N, 2]` raw keys or `[N]` typed
  keys): then row g of prompt n draws with `fold_in(key[n], g)` alone, so a row's samples do not
  depend on the other rows of the batch (nor on their padding).

  `stop_early` (default True): decoding stops once every row has ended (an end token in each),
  so short answers do not pay for `max_new_tokens`; the samples are the same as with False
  (every step run; ended rows emit pads), bit for bit. Under `vmap` the loop runs until every
  mapped batch has ended. Without an end token nothing can end, and every step runs in a scan.

  `constrain` (a function of a tree whose leaves lead with the batch axis B) pins the KV cache,
  the logits and the done flags to devices at every step (the train step splits them over its
  mesh's data × fsdp axes); None leaves their placement to XLA.
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
  if prompt_mask_NxP is not None:
    _checks.shape(fn, "prompt_mask_NxP", prompt_mask_NxP, (N, P), "`prompts_NxP`")
    if not getattr(policy, "takes_prompt_mask", False):
      raise ValueError(f"{fn}: prompt_mask_NxP given, but this model takes prompts of one "
                       f"length (config.model.name = 'llama' takes left-padded prompts).")
  typed = jax.dtypes.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key)
  per_row = jnp.ndim(key) == (1 if typed else 2)
  if per_row:
    if jnp.shape(key)[0] != N:
      raise ValueError(f"{fn}: {jnp.shape(key)[0]} keys for {N} prompts (one key, or one per "
                       f"prompt).")
    row_keys_B = jax.vmap(lambda k: jax.vmap(lambda g: jax.random.fold_in(k, g))(
        jnp.arange(group_size)))(key)
    row_keys_B = row_keys_B.reshape(B, *row_keys_B.shape[2:])
  stop_ids = jnp.asarray(sorted({int(eos_id), *(int(i) for i in eos_ids)} - {-1}) or [-1],
                         jnp.int32)
  if hasattr(policy, "decode_params"):  # the policy's loop-ready form (a head laid out once)
    params = policy.decode_params(params)
  decode = lambda tokens, pos, cache, block=0: policy.decode(params, tokens, pos, cache, block)
  segments, sizes = cache_blocks(P, max_new_tokens, policy.max_len)
  if prompt_mask_NxP is None:
    logits_NxPxV, cache = decode(prompts_NxP, 0, policy.init_cache(N, sizes))
  else:
    logits_NxPxV, cache = policy.decode(params, prompts_NxP, 0, policy.init_cache(N, sizes), 0,
                                        mask_BxL=prompt_mask_NxP)
  repeat = lambda x: jnp.repeat(x, group_size, axis=0) if group_size > 1 else x
  logits_Bx1xV, cache = repeat(logits_NxPxV[:, -1:]), jax.tree_util.tree_map(repeat, cache)
  pin = constrain or (lambda tree: tree)

  def step(carry, t, block):
    cache, logits_BxV, done_B = carry
    if greedy:
      y_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    else:
      scaled_BxV = logits_BxV.astype(jnp.float32) / temperature
      if per_row:
        y_B = jax.vmap(lambda k, x: jax.random.categorical(jax.random.fold_in(k, t), x))(
            row_keys_B, scaled_BxV).astype(jnp.int32)
      else:
        y_B = jax.random.categorical(jax.random.fold_in(key, t), scaled_BxV).astype(jnp.int32)
    logp_B = token_log_probs(logits_BxV[:, None], y_B[:, None], temperature=temperature)[:, 0]
    live_B = ~done_B
    y_B = jnp.where(live_B, y_B, pad_id)
    mask_B = live_B.astype(jnp.float32)
    done_B = done_B | jnp.any(y_B[:, None] == stop_ids[None, :], axis=1)
    next_logits_Bx1xV, cache = decode(y_B[:, None], P + t, cache, block)
    return pin((cache, next_logits_Bx1xV[:, 0], done_B)), (y_B, logp_B * mask_B, mask_B)

  carry = pin((cache, logits_Bx1xV[:, 0], jnp.zeros((B,), bool)))
  can_end = bool(int(eos_id) != -1 or any(int(i) != -1 for i in eos_ids))
  if not stop_early or not can_end:  # nothing ends a row: every step runs, as one scan
    outs = []
    for j, (start, stop) in enumerate(segments):
      carry, out = jax.lax.scan(lambda c, t, j=j: step(c, t, j), carry, jnp.arange(start, stop))
      outs.append(out)
    y_TxB, logp_TxB, mask_TxB = (jnp.concatenate(x, axis=0) for x in zip(*outs))
    return Samples(y_TxB.T, logp_TxB.T, mask_TxB.T, ~carry[2])
  # Stop as soon as every row has ended: a while loop per cache block, writing each step's
  # outputs into buffers that start as what an ended row emits (pad, log-prob 0, mask 0), so
  # the samples are those of running every step.
  T = max_new_tokens
  outs = (jnp.full((T, B), pad_id, jnp.int32), jnp.zeros((T, B), jnp.float32),
          jnp.zeros((T, B), jnp.float32))
  for j, (start, stop) in enumerate(segments):
    def body(loop, j=j):
      t, carry, outs = loop
      carry, out = step(carry, t, j)
      return t + 1, carry, tuple(o.at[t].set(x) for o, x in zip(outs, out))

    def more(loop, stop=stop):
      t, carry, _ = loop
      return (t < stop) & ~jnp.all(carry[2])
    _, carry, outs = jax.lax.while_loop(more, body, (jnp.asarray(start, jnp.int32), carry, outs))
  y_TxB, logp_TxB, mask_TxB = outs
  return Samples(y_TxB.T, logp_TxB.T, mask_TxB.T, ~carry[2])
