"""Text examples and where they come from: JSONL files, seeded generators, train/held-out splits.

    examples = read_jsonl("data/train.jsonl")                  # {"prompt": ..., "answer": ...}
    examples = generate(GENERATORS["arithmetic"], 2000, seed=0)
    train, heldout = split(examples, num_heldout=200, seed=0)

An `Example` is a prompt (a string, or chat messages: a list of {"role", "content"} dicts), an
optional reference answer and optional metadata, with `source` naming where it came from
(file and line, or generator and index) for error messages.

A split keeps identical prompts on one side (a held-out prompt is never also a training prompt);
`check_disjoint` refuses a separately given held-out set that shares prompts with the training
set, with the count.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Example:
  prompt: Any                      # str, or a list of {"role": ..., "content": ...} messages
  reference: str | None = None     # the answer a verifier compares with (None: none)
  metadata: dict = dataclasses.field(default_factory=dict)
  source: str = ""                 # "file.jsonl:12", "arithmetic #5": named in errors

  def key(self) -> str:
    """The prompt as one canonical string (identical prompts, identical keys)."""
    return json.dumps(self.prompt, sort_keys=True, ensure_ascii=False)


def check_prompt(prompt, where: str):
  """The prompt if it is a non-empty string or a list of message dicts; else a ValueError."""
  if isinstance(prompt, str):
    if not prompt.strip():
      raise ValueError(f"{where}: the prompt is empty.")
    return prompt
  if isinstance(prompt, list) and prompt and all(
      isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
      for m in prompt):
    return prompt
  raise ValueError(f"{where}: a prompt is a non-empty string or a list of "
                   f'{{"role": str, "content": str}} messages, got {_short(prompt)}.')


def read_jsonl(path: str, prompt_key: str = "prompt", reference_key: str = "answer"
               ) -> list[Example]:
  """Examples from a JSONL file: one JSON object per line with the prompt under `prompt_key`
  and (optionally) the reference answer under `reference_key`; other keys become metadata.
  Blank lines are skipped. A missing file, an empty one, a line that is not a JSON object or
  lacks a usable prompt is refused, naming the file and line."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config.task.options.path: no file at {path!r}.")
  examples = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      where = f"{path}:{number}"
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno}).") from None
      if not isinstance(row, dict):
        raise ValueError(f"{where}: each line must be a JSON object, got {_short(row)}.")
      if prompt_key not in row:
        raise ValueError(f"{where}: no {prompt_key!r} field (keys: {', '.join(row) or 'none'});"
                         f" set config.task.options.prompt_key.")
      prompt = check_prompt(row[prompt_key], where)
      reference = row.get(reference_key)
      if reference is not None and not isinstance(reference, (str, int, float)):
        raise ValueError(f"{where}: the {reference_key!r} field must be a string or a number, "
                         f"got {_short(reference)}.")
      metadata = {k: v for k, v in row.items() if k not in (prompt_key, reference_key)}
      examples.append(Example(prompt, None if reference is None else str(reference), metadata,
                              where))
  if not examples:
    raise ValueError(f"{path}: no examples (the file is empty).")
  return examples


def generate(generator: Callable, num: int, seed: int, name: str = "generator",
             exclude: set = frozenset()) -> list[Example]:
  """`num` examples with distinct prompts from `generator(rng) -> Example`, drawn with
  `np.random.default_rng(seed)`, none of whose prompt keys is in `exclude`. Refused when the
  generator cannot give that many distinct prompts."""
  rng = np.random.default_rng(seed)
  seen, out = set(exclude), []
  attempts = 0
  while len(out) < num:
    attempts += 1
    if attempts > 20 * num + 1000:
      raise ValueError(f"{name}: only {len(out)} distinct prompts in {attempts} draws, "
                       f"{num} asked for; ask for fewer or widen the generator's options.")
    example = generator(rng)
    key = example.key()
    if key in seen:
      continue
    seen.add(key)
    out.append(dataclasses.replace(example, source=f"{name} #{len(out)}"))
  return out


def split(examples: list[Example], num_heldout: int, seed: int):
  """(train, heldout): the distinct prompts shuffled by `seed`, the first `num_heldout` of them
  (with every copy) held out (0: none). Refused unless training keeps at least one prompt."""
  if isinstance(num_heldout, bool) or not isinstance(num_heldout, int) or num_heldout < 0:
    raise ValueError(f"config.task.options.num_heldout must be an int >= 0, got "
                     f"{num_heldout!r}.")
  keys = list(dict.fromkeys(e.key() for e in examples))
  if num_heldout >= len(keys):
    raise ValueError(f"config.task.options.num_heldout = {num_heldout}, but there are only "
                     f"{len(keys)} distinct prompts: leave some for training.")
  order = np.random.default_rng(seed).permutation(len(keys))
  held = {keys[i] for i in order[:num_heldout]}
  return ([e for e in examples if e.key() not in held],
          [e for e in examples if e.key() in held])


def check_disjoint(train: list[Example], heldout: list[Example]) -> None:
  """Refuses a held-out set that shares prompts with the training set, with the count."""
  train_keys = {e.key() for e in train}
  shared = [e for e in heldout if e.key() in train_keys]
  if shared:
    raise ValueError(f"the held-out set shares {len(shared)} of its {len(heldout)} prompts "
                     f"with the training set (first: {shared[0].source or '?'}, "
                     f"{_short(shared[0].prompt)}): held-out accuracy would measure "
                     f"memory. Remove them from one of the sets.")


def check_references(examples: list[Example]) -> None:
  """Refuses one prompt given two different reference answers, naming both places."""
  first: dict = {}
  for e in examples:
    k = e.key()
    if k in first and first[k].reference != e.reference:
      raise ValueError(f"{first[k].source} and {e.source}: the same prompt with two reference "
                       f"answers ({first[k].reference!r} and {e.reference!r}).")
    first.setdefault(k, e)


def _short(x, n: int = 80) -> str:
  s = repr(x)
  return s if len(s) <= n else s[:n - 3] + "..."
