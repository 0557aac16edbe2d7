"""Tasks: a seeded prompt source plus a reward nobody can backpropagate through.

A `Task` holds static facts (vocabulary, prompt length, response length, end and pad ids) and two
pure functions:

    sample_prompts(key, num_prompts) -> prompts_NxP int32
    score(prompts_BxP, tokens_BxT, mask_BxT) -> scores_B float32

A task is built once per program (`make_task(config.task)`, or by hand) and handed down to the
train step; it is a value, not an entry anyone writes at run time. Factories are registered by
name with `@register_task(name)` (at import, like the estimators); their keyword arguments are
the task's options (`config.task.options.<name>`), with their defaults.

Your own Python reward: `python_task(name, fn, ...)` with `fn(prompt: list[int], response:
list[int]) -> float`, where `response` holds the generated tokens before the end token.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from pg.core.registry import check_new_name
from pg.text.batch import left_pad_mask


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
  # The score's bounds (lo, hi), None for unbounded on that side; figures clip their bands to it.
  score_range: tuple = (None, None)
  # More ids that end a response besides eos_id (a chat model's end-of-turn tokens).
  eos_ids: tuple = ()
  # Prompts of different lengths: left-padded with this id (None: every prompt token is real).
  # The mask is 1 from a row's first token that is not this id on (`prompt_mask`), so a prompt
  # may contain the id itself, but must not begin with it.
  prompt_pad_id: int | None = None
  # One call for the score and the extra metrics (a reward computed on the host once per update):
  # (prompts_BxP, tokens_BxT, mask_BxT) -> (scores_B, {name: [B] float32}); replaces both.
  score_parts: Callable | None = None
  # A held-out set evaluated during training (`pg.run.evaluation`), or None.
  heldout: Any = None
  # Token ids -> text (a tokenizer's decode); None: `token_names` joined by spaces.
  detokenize: Callable | None = None
  # The score as a weighted sum of reward components, ((name, weight), ...): the names are keys
  # of `score_parts`' dict and score = Σ weight·component (None: no components). GDPO reads them.
  component_weights: tuple | None = None

  def decode(self, tokens) -> str:
    tokens = np.asarray(tokens)
    if self.detokenize is not None:
      return self.detokenize([int(t) for t in tokens])
    names = self.token_names or tuple(str(i) for i in range(self.vocab_size))
    return " ".join(names[int(t)] for t in tokens)

  def decode_prompt(self, prompt_P) -> str:
    """A prompt's text without its left padding."""
    prompt_P = np.asarray(prompt_P)
    if self.prompt_pad_id is not None:
      prompt_P = prompt_P[np.asarray(self.prompt_mask(prompt_P[None]))[0] > 0]
    return self.decode(prompt_P)

  def prompt_mask(self, prompts_NxP):
    """float32 `[N, P]`: 1 on each row's prompt tokens, 0 on its left padding; None when
    prompts are not padded (`prompt_pad_id` None)."""
    if self.prompt_pad_id is None:
      return None
    return left_pad_mask(prompts_NxP, self.prompt_pad_id)

  @property
  def stop_ids(self) -> tuple:
    """Every id that ends a response: eos_id (unless -1) and eos_ids."""
    return tuple(sorted({int(self.eos_id), *(int(i) for i in self.eos_ids)} - {-1}))

  def score_and_extras(self, prompts_BxP, tokens_BxT, mask_BxT):
    """(scores_B float32, {name: [B]}): `score_parts` when the task has it, else `score` and
    `extra_metrics`."""
    if self.score_parts is not None:
      scores_B, extras = self.score_parts(prompts_BxP, tokens_BxT, mask_BxT)
    else:
      scores_B = self.score(prompts_BxP, tokens_BxT, mask_BxT)
      extras = ({} if self.extra_metrics is None
                else self.extra_metrics(prompts_BxP, tokens_BxT, mask_BxT))
    return scores_B.astype(jnp.float32), dict(extras)


TASKS: dict[str, Callable] = {}


def register_task(name: str, *, override: bool = False):
  """Decorator: registers a task factory `fn(**options) -> Task` under `name`."""
  def register(factory):
    check_new_name(TASKS, "task", name, override)
    TASKS[name] = factory
    return factory
  return register


def task_options(name: str) -> dict:
  """The options task `name` takes, with their defaults (its factory's keyword arguments)."""
  factory = get_task_factory(name)
  return {p.name: p.default for p in inspect.signature(factory).parameters.values()
          if p.default is not p.empty}


def get_task_factory(name: str) -> Callable:
  if name not in TASKS:
    raise KeyError(f"config.task.name: unknown task {name!r}; known: {', '.join(sorted(TASKS))}.")
  return TASKS[name]


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
  """`value` as a float (NaN and inf included: `config.on_nonfinite` decides, as for a JAX
  reward), or a ValueError naming the task and what was wrong with its type or shape."""
  try:
    x = np.asarray(value)
  except (TypeError, ValueError):  # a ragged sequence
    x = np.asarray(None)
  if x.dtype.kind not in "biuf":
    problem = f"type {type(value).__name__}"
  elif x.ndim:
    problem = f"shape {x.shape}; one number per response"
  else:  # NaN and inf pass, as from a JAX reward: the train step names the update and run
    return float(x)
  raise ValueError(f"task {name!r}: reward_fn must return a float, got {value!r} "
                   f"({problem}) {where}.")


def make_task(name: str, **options) -> Task:
  """The task `name` (config.task.name) built with `options` (config.task.options)."""
  factory = get_task_factory(name)
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
  for i in task.eos_ids:
    if not 0 <= i < V:
      raise ValueError(f"task {task.name!r}: task.eos_ids must lie in [0, {V}) (vocab_size = "
                       f"{V}), got {tuple(task.eos_ids)}.")
  if task.prompt_pad_id is not None and not 0 <= task.prompt_pad_id < V:
    raise ValueError(f"task {task.name!r}: task.prompt_pad_id must be None or lie in [0, {V}), "
                     f"got {task.prompt_pad_id}.")


def _integer(dtype) -> bool:
  return jnp.issubdtype(dtype, jnp.integer)


def _real(dtype) -> bool:
  return any(jnp.issubdtype(dtype, kind) for kind in (jnp.floating, jnp.integer, jnp.bool_))


def _describe(x) -> str:
  if hasattr(x, "shape") and hasattr(x, "dtype"):
    return f"{x.dtype}{list(x.shape)}"
  return repr(x)
