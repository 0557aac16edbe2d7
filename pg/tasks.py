"""Tasks: seeded prompt generators and rewards nobody can backpropagate through.

A `Task` holds static facts (vocabulary, prompt length, response length, end and pad ids) and two
pure functions:

    sample_prompts(key, num_prompts) -> prompts_PxL int32
    score(prompts_BxP, tokens_BxT, mask_BxT) -> scores_B float32

Built in, selected by name with `make_task(name, **options)`:
- "addition": RLVR-style multi-digit addition; reward 1 for the exact answer followed by the end
  token (optionally partial credit per correct position). Pure JAX: it fuses into the step.
- "needle": credit assignment; the prompt names a position k and a token c, the reward is
  1[y_k = c]. One position among many decides the score.
- "target_token": the speed benchmark's task (share of tokens equal to a target; no end token).
- "count_up": an ordinary Python function (no JAX inside) scored through `jax.pure_callback`, so
  it still works under `jit` and `vmap`.

Your own Python reward: `python_task(fn, ...)` with `fn(prompt: list[int], response: list[int])
-> float`, where `response` holds the generated tokens before the end token. See `count_up`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  vocab_size: int
  prompt_len: int
  max_new_tokens: int
  eos_id: int
  pad_id: int
  sample_prompts: Callable
  score: Callable
  token_names: tuple = ()
  # Optional extra per-sequence measurements logged (not optimised) each update, e.g. a gold
  # scorer beside a learned reward: (prompts_BxP, tokens_BxT, mask_BxT) -> {name: [B] float32}.
  extra_metrics: Callable | None = None

  def decode(self, tokens) -> str:
    names = self.token_names or tuple(str(i) for i in range(self.vocab_size))
    return " ".join(names[int(t)] for t in np.asarray(tokens))


def _digits(x_B, n):
  """Base-10 digits of x, most significant first, zero-padded to n: `[B, n]`."""
  powers = 10 ** jnp.arange(n - 1, -1, -1)
  return (x_B[:, None] // powers[None, :]) % 10


def addition(num_digits: int = 2, partial_credit: bool = True, reverse_answer: bool = True):
  """a + b = with `num_digits` digits each; the answer has num_digits + 1 digits, then end.

  Tokens: 0-9 digits, 10 '+', 11 '=', 12 end, 13 pad. `reverse_answer` writes the answer least
  significant digit first (the order in which carries are computed). Partial credit: the fraction
  of the num_digits + 2 answer positions (digits and end token) that are right.
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

  def score(prompts_BxP, tokens_BxT, mask_BxT):
    powers = 10 ** jnp.arange(n - 1, -1, -1)
    a = jnp.sum(prompts_BxP[:, :n] * powers, axis=1)
    b = jnp.sum(prompts_BxP[:, n + 1:2 * n + 1] * powers, axis=1)
    answer = _digits(a + b, n + 1)
    if reverse_answer:
      answer = answer[:, ::-1]
    target_BxA = jnp.concatenate([answer, jnp.full((answer.shape[0], 1), eos)], axis=1)
    got_BxA = jnp.where(mask_BxT[:, :n + 2] > 0, tokens_BxT[:, :n + 2], pad)
    right_BxA = (got_BxA == target_BxA).astype(jnp.float32)
    return jnp.mean(right_BxA, axis=1) if partial_credit else jnp.min(right_BxA, axis=1)

  names = tuple("0123456789") + ("+", "=", "<end>", "<pad>")
  return Task("addition", 14, 2 * n + 2, n + 2, eos, pad, sample_prompts, score, names)


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
  return Task("needle", S + T + 2, 2, T, eos, pad, sample_prompts, score, names)


def python_task(name, reward_fn, *, vocab_size, prompt_len, max_new_tokens, eos_id, pad_id,
                sample_prompts, token_names=()):
  """A task whose reward is a plain Python `reward_fn(prompt: list[int], response: list[int])
  -> float`, called row by row through `jax.pure_callback` (works under `jit` and `vmap`)."""

  def host_score(prompts, tokens, mask):
    lead = tokens.shape[:-1]
    p = np.asarray(prompts).reshape(-1, prompts.shape[-1])
    t = np.asarray(tokens).reshape(-1, tokens.shape[-1])
    m = np.asarray(mask).reshape(-1, mask.shape[-1])
    out = np.empty(t.shape[0], np.float32)
    for i in range(t.shape[0]):
      prompt = [int(x) for x in p[i]]
      response = [int(x) for x, keep in zip(t[i], m[i]) if keep > 0 and x != eos_id]
      where = f"for prompt {prompt} and response {response}"
      try:
        value = reward_fn(prompt, response)
      except Exception as e:
        raise RuntimeError(f"task {name!r}: reward_fn raised {type(e).__name__}: {e} "
                           f"({where}).") from e
      out[i] = _reward_value(name, value, where)
    return out.reshape(lead)

  def score(prompts_BxP, tokens_BxT, mask_BxT):
    result = jax.ShapeDtypeStruct(tokens_BxT.shape[:-1], jnp.float32)
    return jax.pure_callback(host_score, result, prompts_BxP, tokens_BxT, mask_BxT,
                             vmap_method="broadcast_all")

  return Task(name, vocab_size, prompt_len, max_new_tokens, eos_id, pad_id, sample_prompts,
              score, token_names)


def _reward_value(name, value, where) -> float:
  """`value` as a float, or a ValueError naming the task and what was wrong with it."""
  try:
    x = np.asarray(value)
  except (TypeError, ValueError):  # a ragged sequence
    x = np.asarray(None)
  if x.dtype.kind not in "biuf":
    problem = f"type {type(value).__name__}"
  elif x.ndim:
    problem = f"shape {x.shape}; one number per response"
  elif not np.isfinite(x):
    problem = "not finite"
  else:
    return float(x)
  raise ValueError(f"task {name!r}: reward_fn must return a finite float, got {value!r} "
                   f"({problem}) {where}.")


def count_up_reward(prompt: list, response: list, length: int = 8) -> float:
  """Plain Python: the share of `length` steps that count up by one (mod 10) from the prompt."""
  seq = [prompt[-1]] + response
  return sum(b == (a + 1) % 10 for a, b in zip(seq, seq[1:])) / length


def count_up(length: int = 8):
  """Prompt: one digit d. Reward (Python, via pure_callback): the response should read d+1, d+2,
  ... mod 10; the share of its `length` steps that do. Tokens 0-9, 10 end, 11 pad."""
  if length < 1:
    raise ValueError(f"task.length must be >= 1, got {length}.")

  def sample_prompts(key, num_prompts):
    return jax.random.randint(key, (num_prompts, 1), 0, 10).astype(jnp.int32)

  return python_task("count_up", functools.partial(count_up_reward, length=length),
                     vocab_size=12, prompt_len=1, max_new_tokens=length, eos_id=10, pad_id=11,
                     sample_prompts=sample_prompts, token_names=tuple("0123456789") + ("<end>", "<pad>"))


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
  return Task("target_token", vocab_size, prompt_len, length, -1, 0, sample_prompts, score)


TASKS = {"addition": addition, "needle": needle, "count_up": count_up,
         "target_token": target_token}


def make_task(name: str, **options) -> Task:
  """The task `name` (config.task.name) built with `options` (config.task.options)."""
  if name not in TASKS:
    raise KeyError(f"config.task.name: unknown task {name!r}; known: {', '.join(sorted(TASKS))}.")
  factory = TASKS[name]
  try:
    inspect.signature(factory).bind(**options)
  except TypeError as e:
    allowed = ", ".join(inspect.signature(factory).parameters) or "none"
    raise TypeError(f"config.task.options {dict(options)} do not fit task {name!r} ({e}); "
                    f"its options: {allowed}.") from None
  except ValueError:  # no signature to inspect (a builtin): let the call decide
    pass
  return factory(**options)


def check(task: Task, num_prompts: int) -> None:
  """Raises, naming the task and the field, unless its sizes, ids, prompts and scores fit
  together. Shapes only (`jax.eval_shape`): nothing runs and nothing compiles."""
  _check_ids(task)
  prompts = jax.eval_shape(lambda key: task.sample_prompts(key, num_prompts),
                           jax.ShapeDtypeStruct((2,), jnp.uint32))
  P, T = task.prompt_len, task.max_new_tokens
  if getattr(prompts, "shape", None) != (num_prompts, P) or not _integer(prompts.dtype):
    raise ValueError(f"task {task.name!r}: sample_prompts(key, {num_prompts}) must return integer "
                     f"token ids of shape ({num_prompts}, task.prompt_len = {P}) to fit the "
                     f"model's context of prompt_len + max_new_tokens = {P + T}, got "
                     f"{_describe(prompts)}.")
  B = num_prompts
  scores = jax.eval_shape(task.score, prompts, jax.ShapeDtypeStruct((B, T), jnp.int32),
                          jax.ShapeDtypeStruct((B, T), jnp.float32))
  if getattr(scores, "shape", None) != (B,) or not _real(scores.dtype):
    raise ValueError(f"task {task.name!r}: score(prompts_BxP, tokens_BxT, mask_BxT) must return "
                     f"one real score per row, shape ({B},) of a float, int or bool dtype, got "
                     f"{_describe(scores)}.")


def _check_ids(task: Task) -> None:
  for field in ("vocab_size", "prompt_len", "max_new_tokens"):
    value = getattr(task, field)
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"task {task.name!r}: task.{field} must be a positive int, got {value!r}.")
  V = task.vocab_size
  if not -1 <= task.eos_id < V:
    raise ValueError(f"task {task.name!r}: task.eos_id must lie in [-1, {V}) (-1: no end "
                     f"token; vocab_size = {V}), got {task.eos_id}.")
  if not 0 <= task.pad_id < V:
    raise ValueError(f"task {task.name!r}: task.pad_id must lie in [0, {V}) (vocab_size = "
                     f"{V}), got {task.pad_id}.")


def _integer(dtype) -> bool:
  return jnp.issubdtype(dtype, jnp.integer)


def _real(dtype) -> bool:
  return any(jnp.issubdtype(dtype, kind) for kind in (jnp.floating, jnp.integer, jnp.bool_))


def _describe(x) -> str:
  if hasattr(x, "shape") and hasattr(x, "dtype"):
    return f"{x.dtype}{list(x.shape)}"
  return repr(x)
