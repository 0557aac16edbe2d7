"""Registries of advantage estimators and policy losses, selected by name from a config.

One signature per kind, so a research fork adds a function and one line:

    @pg.register_advantage("my_estimator")
    def my_estimator(inputs: pg.AdvantageInputs, hp, state) -> pg.AdvantageOutputs: ...

    @pg.register_policy_loss("my_loss")
    def my_loss(inputs: pg.PolicyLossInputs, hp) -> tuple[loss_BxT, metrics]: ...

`hp` is a dict of float32 scalars (traced under `jit`: see `pg.hparams`), `state` the baseline
state pytree (see `pg.baselines.init_baseline_state`). A policy loss returns the *per-token*
loss `[B, T]` (0 on masked tokens) and a dict of scalar metrics; aggregation over tokens is a
separate, configured choice (`pg.aggregation`).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple, Optional

import flax.struct
import jax

from pg import _checks

Array = jax.Array


@flax.struct.dataclass
class AdvantageInputs:
  """What an advantage estimator sees. Rows of one prompt's G samples are consecutive.

  scores_B: sequence scores R. mask_BxT: 1.0 on generated tokens. values_BxT: critic V(s_t) or
  None. kl_BxT: per-token KL estimate to put in the reward as −β·kl_t, or None.
  group_size: G, static.
  """
  scores_B: Array
  mask_BxT: Array
  values_BxT: Optional[Array] = None
  kl_BxT: Optional[Array] = None
  group_size: int = flax.struct.field(pytree_node=False, default=1)

  def check(self, fn: str = "advantage estimator") -> "AdvantageInputs":
    """Raises, naming the argument, unless every array fits `[B, T]` / `[B]` and G divides B."""
    _checks.rank(fn, "mask_BxT", self.mask_BxT, 2)
    _checks.shape(fn, "scores_B", self.scores_B, self.mask_BxT.shape[:1], "`mask_BxT`[:1]")
    _checks.same_shape(fn, {"mask_BxT": self.mask_BxT, "values_BxT": self.values_BxT,
                            "kl_BxT": self.kl_BxT})
    _checks.group_size(fn, self.mask_BxT.shape[0], self.group_size)
    return self


class AdvantageOutputs(NamedTuple):
  advantages_BxT: Array  # float32, 0 on masked tokens
  returns_BxT: Array     # float32 value targets, computed before any whitening
  state: Any             # the baseline state, updated


class PolicyLossInputs(NamedTuple):
  logp_BxT: Array        # log π_θ(y_t | y_<t), differentiable
  old_logp_BxT: Array    # behaviour log-probs (from the sampler), no gradient
  advantages_BxT: Array  # treated as constants
  mask_BxT: Array

  def check(self, fn: str = "policy loss") -> "PolicyLossInputs":
    """Raises, naming the argument, unless all four arrays share one `[B, T]` shape."""
    _checks.rank(fn, "logp_BxT", self.logp_BxT, 2)
    _checks.same_shape(fn, {"logp_BxT": self.logp_BxT, "old_logp_BxT": self.old_logp_BxT,
                            "advantages_BxT": self.advantages_BxT, "mask_BxT": self.mask_BxT})
    return self


ADVANTAGE_ESTIMATORS: dict[str, Callable] = {}
POLICY_LOSSES: dict[str, Callable] = {}

_SIGNATURES = {
    "advantage": ("fn(inputs: AdvantageInputs, hp: dict, state) -> AdvantageOutputs", 3),
    "policy loss": ("fn(inputs: PolicyLossInputs, hp: dict) -> (loss_BxT, metrics)", 2),
}


def _validate_signature(kind: str, name: str, fn: Callable) -> None:
  expected, n = _SIGNATURES[kind]
  if not callable(fn):
    raise TypeError(f"register {kind} {name!r}: expected a callable {expected}, got {fn!r}.")
  try:
    params = list(inspect.signature(fn).parameters.values())
  except (TypeError, ValueError):
    return  # builtins and some C callables have no signature to inspect
  positional = [p for p in params
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
  varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
  required_kw = [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
  required_pos = [p for p in positional if p.default is p.empty]
  fits = (len(required_pos) <= n and (len(positional) >= n or varargs) and not required_kw)
  if not fits:
    raise TypeError(
        f"register {kind} {name!r}: {getattr(fn, '__name__', fn)}{inspect.signature(fn)} does "
        f"not fit the expected signature {expected}.")


def _register(table: dict, kind: str, name: str, fn: Callable, override: bool):
  if not isinstance(name, str) or not name:
    raise TypeError(f"register {kind}: the name must be a non-empty string, got {name!r}.")
  if name in table and not override:
    raise ValueError(f"register {kind}: {name!r} is already registered; pass override=True "
                     f"to replace it.")
  _validate_signature(kind, name, fn)
  table[name] = fn
  return fn


def register_advantage(name: str, *, override: bool = False):
  """Decorator: registers `fn(inputs, hp, state) -> AdvantageOutputs` under `name`."""
  return lambda fn: _register(ADVANTAGE_ESTIMATORS, "advantage", name, fn, override)


def register_policy_loss(name: str, *, override: bool = False):
  """Decorator: registers `fn(inputs, hp) -> (loss_BxT, metrics)` under `name`."""
  return lambda fn: _register(POLICY_LOSSES, "policy loss", name, fn, override)


def _get(table: dict, kind: str, name: str) -> Callable:
  if name not in table:
    raise KeyError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table))}.")
  return table[name]


def get_advantage(name: str) -> Callable:
  return _get(ADVANTAGE_ESTIMATORS, "advantage estimator", name)


def get_policy_loss(name: str) -> Callable:
  return _get(POLICY_LOSSES, "policy loss", name)
