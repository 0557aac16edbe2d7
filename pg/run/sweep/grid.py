"""A sweep's grid: the swept values of a config, its groups (one compiled program each) and
each group's runs (settings × seeds, one vmapped axis)."""

from __future__ import annotations

import copy
import itertools
from typing import NamedTuple

import numpy as np

from pg import train
from pg.core import hparams as hparams_lib
from pg.run.configs import STRUCTURAL


def continuous_names() -> tuple:
  """The hyperparameters a sweep may vary in one program: `pg.hparams.spec()`'s names."""
  return tuple(hparams_lib.spec())


def _get(config, path):
  for part in path.split("."):
    config = config[part]
  return config


def _set(config, path, value):
  *parents, leaf = path.split(".")
  for part in parents:
    config = config[part]
  config[leaf] = value


def swept(config):
  """(continuous, structural): name -> tuple of values, for every sweep entry that is set.

  Raises, naming the field, on an empty or repeated tuple, an out-of-range hyperparameter or a
  structural value the train step would refuse; all before anything compiles."""
  continuous, structural = {}, {}
  block = config.get("sweep")
  if block is None:
    return continuous, structural
  _refuse_unknown_names(block)
  names = continuous_names()
  for path in names + STRUCTURAL:
    try:
      values = _get(block, path)
    except KeyError:
      continue
    if values is None:
      continue
    if not isinstance(values, (tuple, list)) or not values:
      raise ValueError(f"config.sweep.{path} must be a non-empty tuple of values, got "
                       f"{values!r}.")
    values = tuple(values)
    if len(set(values)) != len(values):
      raise ValueError(f"config.sweep.{path} repeats a value: {values}.")
    (continuous if path in names else structural)[path] = values
  for name, values in continuous.items():
    for v in values:
      if isinstance(v, (bool, str)) or not isinstance(v, (int, float)):
        raise ValueError(f"config.sweep.{name} must hold numbers, got {v!r}.")
      try:
        hparams_lib._check_value(name, v)
      except ValueError as e:
        raise ValueError(f"config.sweep.{name}: {e}") from None
  for option, kinds, what in (("runs_per_batch", (int,), "an int"),
                              ("memory_budget_mib", (int, float), "a number")):
    value = block.get(option, 0)
    if not isinstance(value, kinds) or isinstance(value, bool) or not value >= 0:
      raise ValueError(f"config.sweep.{option} must be {what} >= 0 (0: automatic), "
                       f"got {value!r}.")
  return continuous, structural


def _refuse_unknown_names(block):
  """A misspelt sweep entry would otherwise be ignored: the grid would silently lack it."""
  options = ("runs_per_batch", "memory_budget_mib")
  known = continuous_names() + STRUCTURAL + options
  names = [k for k in block if k != "model"] + [f"model.{k}" for k in block.get("model") or {}]
  unknown = [n for n in names if n not in known]
  if unknown:
    raise KeyError(f"config.sweep: unknown name(s) {unknown}; known: {', '.join(known)}.")


class Group(NamedTuple):
  """One compiled program's worth of runs: a structural choice, its config, task and policy."""
  name: str         # "advantage=rloo,model.d_model=64", or "base"
  choices: dict     # structural path -> value
  config: object    # the base config with the choices applied (validated)
  task: object      # what pg.train.build(config) made for it
  policy: object


def groups(config, task=None) -> list[Group]:
  """Every combination of the structural values, each built (and so validated) once by
  `pg.train.build`; `task` replaces config.task in every group."""
  _, structural = swept(config)
  out = []
  for combo in itertools.product(*structural.values()):
    choices = dict(zip(structural, combo))
    group_config = copy.deepcopy(config)
    with group_config.unlocked():
      for path, value in choices.items():
        _set(group_config, path, value)
    try:
      group_task, group_policy = train.build(group_config, task)
    except (ValueError, KeyError, TypeError) as e:
      hint = ""
      if any(isinstance(v, str) and v.startswith("(") for v in choices.values()):
        hint = (" (on the command line, quote names inside the tuple: "
                "--config.sweep.advantage='(\"rloo\", \"grpo\")')")
      message = e.args[0] if e.args else e  # (a KeyError's str() adds quotes)
      raise type(e)(f"config.sweep: the setting {choices} is refused: {message}{hint}") from None
    name = ",".join(f"{k}={v}" for k, v in choices.items()) or "base"
    out.append(Group(name, choices, group_config, group_task, group_policy))
  return out


def settings(config) -> list[dict]:
  """Every combination of the continuous values: name -> value (empty dict: no grid)."""
  continuous, _ = swept(config)
  return [dict(zip(continuous, combo)) for combo in itertools.product(*continuous.values())]


def run_labels(config) -> list[dict]:
  """One label per run of a group, setting-major: {"seed": j, swept name: value, ...}."""
  return [{"seed": j, **s} for s in settings(config) for j in range(config.num_seeds)]


def make_runs(config, labels) -> train.Runs:
  """Keys and per-run hyperparameter arrays for `labels` (seed j gets seed_keys(config)[j])."""
  keys = train.seed_keys(config)
  names = sorted({k for label in labels for k in label} - {"seed"})
  base = config.hparams.to_dict()
  hp = {name: np.asarray([label.get(name, base[name]) for label in labels], np.float32)
        for name in names}
  hp = hparams_lib.make_hparams(**{**base, **hp})
  return train.Runs(keys[np.asarray([label["seed"] for label in labels])], hp, list(labels))


def check_not_a_sweep(config, script="experiments/train.py"):
  """`experiments/train.py` trains one setting: a config with sweep values set goes to sweep.py."""
  continuous, structural = swept(config)
  if continuous or structural:
    raise ValueError(f"{script}: config.sweep sets {sorted({**continuous, **structural})}; "
                     f"run it with experiments/sweep.py (or clear config.sweep).")
