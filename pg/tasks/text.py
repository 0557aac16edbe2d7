"""Text tasks: prompts rendered with a model's tokenizer (and chat template), a reward on decoded
text computed on the host once per update, and a held-out set.

    task = text_task("mine", train, heldout, tokenizer, max_new_tokens=64,
                     verifier=Verifier("boxed", "numeric"), weights={"correct": 1.0,
                     "format": 0.1})
    task = text_task("mine", train, heldout, tokenizer, max_new_tokens=64, reward=my_reward,
                     weights={"helpful": 1.0, "length": 0.0})

`train` and `heldout` are lists of `pg.tasks.datasets.Example`. Each prompt is encoded once
(chat messages, or a string sent as the user's message, through the tokenizer's chat template
when `chat` is True and the tokenizer has one; else the string as it is) and left-padded to the
longest prompt, P tokens. `sample_prompts(key, N)` draws N training prompts with replacement.

The reward: `reward(prompts: list[str], responses: list[str], references: list[str | None])`
returns one float per response, or a dict {component: list of floats} whose names are exactly
those of `weights` (weight 0: logged, not optimised); the score is Σ weight · component. It is
called once per update for every row of every run (`jax.pure_callback`, vmap_method
"broadcast_all", inside the compiled, seed-vmapped step). The responses are decoded up to their
end token; a truncated response is decoded as far as it got. A reward that raises is called
again row by row, and the error names the first prompt and response that raise; a wrong count
or a value that is not a number is refused the same way. NaN and inf pass, to the train step's
`config.on_nonfinite` rule.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pg.tasks.base import Task
from pg.text.batch import left_pad, response_ids
from pg.tasks.datasets import Example, check_disjoint, check_references
from pg.tasks.verifiers import Verifier, check_weights


@dataclasses.dataclass(frozen=True)
class HeldOut:
  """A task's held-out problems: their left-padded prompts, references and a judge
  `judge(response: str, reference) -> (answer | None, correct: bool)`."""
  prompts_ExP: np.ndarray
  references: tuple
  judge: Callable
  examples: tuple = ()

  @property
  def size(self) -> int:
    return int(self.prompts_ExP.shape[0])


def encode_example(example: Example, tokenizer, chat: bool = True, system_prompt: str = ""):
  """The prompt's token ids: chat messages (or a string as the user's message, when `chat` and
  the tokenizer has a template) through the chat template with the assistant's turn opened; a
  string without a template as it is."""
  prompt = example.prompt
  if isinstance(prompt, str) and not (chat and tokenizer.chat_template):
    return list(tokenizer.encode(prompt))
  if tokenizer.chat_template is None:
    raise ValueError(f"{example.source}: the prompt is a chat, but the tokenizer of "
                     f"{tokenizer.path!r} has no chat template; give plain-text prompts.")
  messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
  if system_prompt and messages[0]["role"] != "system":
    messages = [{"role": "system", "content": system_prompt}] + messages
  return list(tokenizer.encode_chat(messages))


def prompt_table(rows: Sequence[Sequence[int]], examples: Sequence[Example], pad_id: int,
                 max_prompt_tokens: int | None):
  """Left-padded `[N, P]` int32 ids of `rows` (P: the longest, or `max_prompt_tokens`); a longer
  prompt is refused, naming its example."""
  longest = max(len(r) for r in rows)
  P = longest if max_prompt_tokens is None else max_prompt_tokens
  for row, example in zip(rows, examples):
    if len(row) > P:
      raise ValueError(f"{example.source}: the prompt has {len(row)} tokens, more than "
                       f"config.task.options.max_prompt_tokens = {P}; shorten it or raise the "
                       f"limit.")
    if not row:
      raise ValueError(f"{example.source}: the prompt encodes to no tokens.")
  return left_pad(rows, pad_id, P)[0]


def left_pad_id(rows, preferred: int | None, vocab_size: int) -> int:
  """An id no prompt begins with (`preferred` if it can), so a row's padding is its leading run
  of that id (`Task.prompt_mask`)."""
  firsts = {int(r[0]) for r in rows}
  if preferred is not None and preferred not in firsts:
    return int(preferred)
  return next(i for i in range(vocab_size) if i not in firsts)


def text_task(name: str, train: Sequence[Example], heldout: Sequence[Example], tokenizer, *,
              max_new_tokens: int, reward: Callable | None = None,
              verifier: Verifier | None = None, weights: Mapping[str, float] | None = None,
              chat: bool = True, system_prompt: str = "", max_prompt_tokens: int | None = None,
              judge: Callable | None = None) -> Task:
  """A `pg.tasks.Task` over text (see the module docstring).

  Args:
    name: the task's name, in errors.
    train, heldout: the examples (`heldout` may be empty: no evaluation).
    tokenizer: a `pg.text.Tokenizer` (the model's).
    max_new_tokens: T, response slots.
    reward: the batched reward; None: the verifier's components.
    verifier: extracts and compares answers: the reward's components when `reward` is None,
      and the held-out judge.
    weights: component -> weight. Default: {"correct": 1.0} for a verifier.
    chat, system_prompt: how prompts are rendered (`encode_example`).
    max_prompt_tokens: P; None: the longest prompt.
    judge: `judge(response, reference) -> (answer, correct)` for the held-out set; default the
      verifier's.
  """
  if reward is None and verifier is None:
    raise ValueError(f"task {name!r}: give a reward or a verifier.")
  if not train:
    raise ValueError(f"task {name!r}: no training examples.")
  train, heldout = list(train), list(heldout)
  check_references(train + heldout)
  check_disjoint(train, heldout)
  if reward is None:
    weights = {"correct": 1.0} if weights is None else dict(weights)
    weights = {"correct": 0.0, "format": 0.0, "no_answer": 0.0, **check_weights(
        weights, ("correct", "format", "no_answer"))}
    reward = lambda prompts, responses, references: verifier.components(responses, references)
  elif weights is not None:
    weights = {str(k): float(v) for k, v in dict(weights).items()}
  judge = judge or (verifier.judge if verifier is not None else None)
  if heldout and judge is None:
    raise ValueError(f"task {name!r}: a held-out set needs a verifier or a judge to tell right "
                     f"answers.")
  examples = train + heldout
  rows = [encode_example(e, tokenizer, chat, system_prompt) for e in examples]
  pad = left_pad_id(rows, tokenizer.pad_id, tokenizer.vocab_size)
  table = prompt_table(rows, examples, pad, max_prompt_tokens)
  P = table.shape[1]
  index = {}
  for n, row in enumerate(table):
    index.setdefault(row.tobytes(), n)
  stop_ids = tuple(int(i) for i in tokenizer.eos_ids)
  if not stop_ids:
    raise ValueError(f"task {name!r}: the tokenizer of {tokenizer.path!r} declares no end "
                     f"token; responses could not end.")
  components = tuple(weights) if weights is not None else ()
  weight_C = np.array([weights[c] for c in components], np.float32) if weights else None
  prompt_texts = [_prompt_text(e) for e in examples]

  def response_text(tokens_T, mask_T) -> str:
    return tokenizer.decode(response_ids(tokens_T, mask_T, stop_ids)[0])

  def host_parts(prompts, tokens, mask):
    lead = tokens.shape[:-1]
    p = np.asarray(prompts).reshape(-1, P)
    t = np.asarray(tokens).reshape(-1, tokens.shape[-1])
    m = np.asarray(mask).reshape(-1, mask.shape[-1])
    which = []
    for row in p:
      n = index.get(np.ascontiguousarray(row, np.int32).tobytes())
      if n is None:
        raise ValueError(f"task {name!r}: a prompt that is not one of the task's own was scored.")
      which.append(n)
    prompt_list = [prompt_texts[n] for n in which]
    references = [examples[n].reference for n in which]
    responses = [response_text(t[i], m[i]) for i in range(len(which))]
    parts = _call_reward(name, reward, prompt_list, responses, references, components)
    if weights is None:
      scores = parts[0]
      extras = []
    else:
      scores = (weight_C[:, None] * parts).sum(axis=0)
      extras = list(parts)
    return tuple(np.asarray(x, np.float32).reshape(lead) for x in [scores, *extras])

  def score_parts(prompts_BxP, tokens_BxT, mask_BxT):
    lead = tokens_BxT.shape[:-1]
    out = [jax.ShapeDtypeStruct(lead, jnp.float32)] * (1 + len(components))
    values = jax.pure_callback(host_parts, tuple(out), prompts_BxP, tokens_BxT, mask_BxT,
                               vmap_method="broadcast_all")
    return values[0], dict(zip(components, values[1:]))

  def score(prompts_BxP, tokens_BxT, mask_BxT):
    return score_parts(prompts_BxP, tokens_BxT, mask_BxT)[0]

  train_NxP = jnp.asarray(table[:len(train)])

  def sample_prompts(key, num_prompts):
    return train_NxP[jax.random.randint(key, (num_prompts,), 0, len(train))]

  held = None
  if heldout:
    held = HeldOut(table[len(train):], tuple(e.reference for e in heldout), judge,
                   tuple(heldout))
  score_range = (None, None)
  if weights is not None and all(c in ("correct", "format", "no_answer") for c in components):
    score_range = (float(np.minimum(weight_C, 0).sum()), float(np.maximum(weight_C, 0).sum()))
  return Task(name, int(tokenizer.vocab_size), P, int(max_new_tokens), stop_ids[0], stop_ids[0],
              sample_prompts, score, score_range=score_range, eos_ids=stop_ids[1:],
              prompt_pad_id=pad, score_parts=score_parts, heldout=held,
              detokenize=lambda ids: tokenizer.decode(
                  [i for i in ids if i not in stop_ids]),
              extra_metrics=None,
              component_weights=(None if weights is None else
                                 tuple((c, float(w)) for c, w in zip(components, weight_C))))


def _prompt_text(example: Example) -> str:
  p = example.prompt
  return p if isinstance(p, str) else "\n".join(f"{m['role']}: {m['content']}" for m in p)


def _call_reward(name, reward, prompts, responses, references, components):
  """`[C, n]` float64 (C = len(components), or 1 for a reward returning a list), or one error
  naming the task and what was wrong: for a reward that raises, the first prompt and response
  that raise alone."""
  n = len(responses)
  try:
    out = reward(prompts, responses, references)
  except Exception as e:
    for i in range(n):  # find the row: one call each
      try:
        reward(prompts[i:i + 1], responses[i:i + 1], references[i:i + 1])
      except Exception as row_error:
        raise RewardError(
            f"task {name!r}: the reward raised {type(row_error).__name__}: {row_error} for "
            f"prompt {_short(prompts[i])} and response {_short(responses[i])}.") from row_error
    raise RewardError(f"task {name!r}: the reward raised {type(e).__name__}: {e} for a batch "
                      f"of {n} (no single row raises alone).") from e
  try:
    return _as_parts(out, n, components)
  except RewardError as e:
    raise RewardError(f"task {name!r}: the reward {e}.") from None


class RewardError(ValueError):
  """A text task's reward raised, or returned something that is not one number per response."""


def _as_parts(out, n, components):
  if isinstance(out, Mapping):
    if not components:
      raise RewardError(f"returned components {sorted(out)} but the task has no weights for "
                        f"them (give `weights`)")
    if set(out) != set(components):
      raise RewardError(f"returned components {sorted(out)}; the weights name "
                        f"{sorted(components)}")
    return np.stack([_numbers(out[c], n, f"component {c!r}") for c in components])
  if components:
    raise RewardError(f"returned {type(out).__name__}, not the dict of components "
                      f"{sorted(components)} the weights name")
  return _numbers(out, n, "scores")[None]


def _numbers(values, n, what):
  try:
    x = np.asarray(values)
  except (TypeError, ValueError):
    x = np.asarray(None)
  if x.dtype.kind not in "biuf":
    raise RewardError(f"returned {what} that are not numbers ({_short(values)})")
  if x.shape != (n,):
    raise RewardError(f"returned {x.size if x.ndim else 'a scalar'} {what} for {n} responses "
                      f"(one number per response)")
  return x.astype(np.float64)


def _short(s, n: int = 120) -> str:
  s = repr(s)
  return s if len(s) <= n else s[:n - 3] + "..."
