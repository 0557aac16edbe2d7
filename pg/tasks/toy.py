"""The built-in toy tasks on integer tokens, registered by name.

- "addition": RLVR-style multi-digit addition; reward 1 for the exact answer followed by the end
  token (optionally partial credit per correct position). Pure JAX: it fuses into the step.
- "needle": credit assignment; the prompt names a position k and a token c, the reward is
  1[y_k = c]. One position among many decides the score.
- "target_token": the speed benchmark's task (share of tokens equal to a target; no end token).
- "count_up": an ordinary Python function (no JAX inside) scored through `jax.pure_callback`, so
  it still works under `jit` and `vmap`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from pg.tasks.base import Task, python_task, register_task


def _digits(x_B, n):
  """Base-10 digits of x, most significant first, zero-padded to n: `[B, n]`."""
  powers = 10 ** jnp.arange(n - 1, -1, -1)
  return (x_B[:, None] // powers[None, :]) % 10


@register_task("addition")
def addition(num_digits: int = 2, partial_credit: bool = True, reverse_answer: bool = True):
  """a + b = with `num_digits` digits each; the answer has num_digits + 1 digits, then end.

  Tokens: 0-9 digits, 10 '+', 11 '=', 12 end, 13 pad. `reverse_answer` writes the answer least
  significant digit first (the order in which carries are computed). Partial credit: the fraction
  of the num_digits + 2 answer positions (digits and end token) that are right.

  Whatever `partial_credit` is, each update also logs two extra metrics (`Task.extra_metrics`):
  `exact_accuracy`, 1 when every digit and the end token are right, and `partial_credit`, the
  fraction of answer positions right. Partial credit is generous: with one digit, a right carry
  and end token after a wrong ones digit already score 2/3.
  """
  if num_digits < 1:
    raise ValueError(f"task.num_digits must be >= 1, got {num_digits}.")
  n = num_digits
  plus, equals, eos, pad = 10, 11, 12, 13

  def sample_prompts(key, num_prompts):
    ab = jax.random.randint(key, (num_prompts, 2), 0, 10 ** n)
    return jnp.concatenate([_digits(ab[:, 0], n), jnp.full((num_prompts, 1), plus),
                            _digits(ab[:, 1], n), jnp.full((num_prompts, 1), equals)],
                           axis=1).astype(jnp.int32)

  def right_positions(prompts_BxP, tokens_BxT, mask_BxT):
    """1.0 where an answer position (num_digits + 1 digits, then end) is right: `[B, n + 2]`."""
    powers = 10 ** jnp.arange(n - 1, -1, -1)
    a = jnp.sum(prompts_BxP[:, :n] * powers, axis=1)
    b = jnp.sum(prompts_BxP[:, n + 1:2 * n + 1] * powers, axis=1)
    answer = _digits(a + b, n + 1)
    if reverse_answer:
      answer = answer[:, ::-1]
    target_BxA = jnp.concatenate([answer, jnp.full((answer.shape[0], 1), eos)], axis=1)
    got_BxA = jnp.where(mask_BxT[:, :n + 2] > 0, tokens_BxT[:, :n + 2], pad)
    return (got_BxA == target_BxA).astype(jnp.float32)

  def score(prompts_BxP, tokens_BxT, mask_BxT):
    right_BxA = right_positions(prompts_BxP, tokens_BxT, mask_BxT)
    return jnp.mean(right_BxA, axis=1) if partial_credit else jnp.min(right_BxA, axis=1)

  def extra_metrics(prompts_BxP, tokens_BxT, mask_BxT):
    right_BxA = right_positions(prompts_BxP, tokens_BxT, mask_BxT)
    return {"exact_accuracy": jnp.min(right_BxA, axis=1),
            "partial_credit": jnp.mean(right_BxA, axis=1)}

  names = tuple("0123456789") + ("+", "=", "<end>", "<pad>")
  return Task("addition", 14, 2 * n + 2, n + 2, eos, pad, sample_prompts, score, names,
              extra_metrics=extra_metrics, score_range=(0.0, 1.0))


@register_task("needle")
def needle(length: int = 8, num_symbols: int = 4, exclusive: bool = True):
  """Prompt [k, c]: put symbol c at response position k.

  Reward 1[y_k = c], and with `exclusive` minus the share of the other positions that also hold
  c, so that writing c everywhere does not pay: the policy must learn *where*, from a score that
  a sequence-level estimator smears over every token. Tokens: 0..S−1 symbols, S..S+T−1 position
  markers, then end and pad.
  """
  if length < 1 or num_symbols < 2:
    raise ValueError(f"task.length must be >= 1 and task.num_symbols >= 2, got {length}, "
                     f"{num_symbols}.")
  S, T = num_symbols, length
  eos, pad = S + T, S + T + 1

  def sample_prompts(key, num_prompts):
    k1, k2 = jax.random.split(key)
    pos = jax.random.randint(k1, (num_prompts,), 0, T)
    sym = jax.random.randint(k2, (num_prompts,), 0, S)
    return jnp.stack([S + pos, sym], axis=1).astype(jnp.int32)

  def score(prompts_BxP, tokens_BxT, mask_BxT):
    pos_B = prompts_BxP[:, 0] - S
    at_B = jnp.take_along_axis(tokens_BxT, pos_B[:, None], axis=1)[:, 0]
    live_B = jnp.take_along_axis(mask_BxT, pos_B[:, None], axis=1)[:, 0] > 0
    hit_B = ((at_B == prompts_BxP[:, 1]) & live_B).astype(jnp.float32)
    if not exclusive or T == 1:
      return hit_B
    elsewhere_BxT = ((tokens_BxT == prompts_BxP[:, 1:2]) & (mask_BxT > 0)
                     & (jnp.arange(T)[None, :] != pos_B[:, None]))
    return hit_B - jnp.sum(elsewhere_BxT, axis=1) / (T - 1)

  names = tuple(f"s{i}" for i in range(S)) + tuple(f"@{t}" for t in range(T)) + ("<end>",
                                                                                 "<pad>")
  # hit − (other positions holding c) / (T − 1): −1 when c fills every other position.
  lowest = -1.0 if exclusive and T > 1 else 0.0
  return Task("needle", S + T + 2, 2, T, eos, pad, sample_prompts, score, names,
              score_range=(lowest, 1.0))


def count_up_reward(prompt: list, response: list, length: int = 8) -> float:
  """Plain Python: the share of `length` steps that count up by one (mod 10) from the prompt."""
  seq = [prompt[-1]] + response
  return sum(b == (a + 1) % 10 for a, b in zip(seq, seq[1:])) / length


@register_task("count_up")
def count_up(length: int = 8):
  """Prompt: one digit d. Reward (Python, via pure_callback): the response should read d+1, d+2,
  ... mod 10; the share of its `length` steps that do. Tokens 0-9, 10 end, 11 pad."""
  if length < 1:
    raise ValueError(f"task.length must be >= 1, got {length}.")

  def sample_prompts(key, num_prompts):
    return jax.random.randint(key, (num_prompts, 1), 0, 10).astype(jnp.int32)

  task = python_task("count_up", functools.partial(count_up_reward, length=length),
                     vocab_size=12, prompt_len=1, max_new_tokens=length, eos_id=10, pad_id=11,
                     sample_prompts=sample_prompts, token_names=tuple("0123456789") + ("<end>", "<pad>"))
  # At most `length` response tokens, so at most `length` steps count: a share in [0, 1].
  return dataclasses.replace(task, score_range=(0.0, 1.0))


@register_task("target_token")
def target_token(vocab_size: int = 64, prompt_len: int = 8, length: int = 24, target: int = 7):
  """The speed benchmark's task: random prompts, reward = share of generated tokens equal to
  `target`. No end token (every response is `length` tokens), as in the reference loop."""
  if not 0 <= target < vocab_size:
    raise ValueError(f"task.target must lie in [0, {vocab_size}), got {target}.")

  def sample_prompts(key, num_prompts):
    return jax.random.randint(key, (num_prompts, prompt_len), 0, vocab_size).astype(jnp.int32)

  def score(prompts_BxP, tokens_BxT, mask_BxT):
    hits = ((tokens_BxT == target) & (mask_BxT > 0)).astype(jnp.float32)
    return jnp.sum(hits, axis=1) / length

  # eos_id = -1 never matches a sampled token; pad_id is then never written.
  return Task("target_token", vocab_size, prompt_len, length, -1, 0, sample_prompts, score,
              score_range=(0.0, 1.0))


