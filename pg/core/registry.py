"""Registries of advantage estimators and policy losses, selected by name from a config.

One signature per kind, so a research fork adds a function and one line:

    @pg.register_advantage("my_estimator", min_group_size=2)
    def my_estimator(inputs: pg.AdvantageInputs, hp, state) -> pg.AdvantageOutputs: ...

    @pg.register_policy_loss("my_loss", hparams={"my_eps": (0.2, 0.0, 1.0, False, True, "...")})
    def my_loss(inputs: pg.PolicyLossInputs, hp) -> tuple[loss_BxT, metrics]: ...

A registration carries the facts the config checks read (nothing else keeps a list of names):
an estimator's `needs_critic` (values from a value head), `min_group_size` and `handles_kl`; a
loss's own swept `hparams` (a `pg.hparams.SPEC`-style entry each, added to the swept values of
every run) and the `aggregation` it is defined with (None: any, token-mean by default).

The KL penalty in the reward cannot be dropped by an estimator. Unless it registers
`handles_kl=True` (it folds `inputs.kl_BxT` into its own per-token rewards, as GAE does), an
estimator sees `kl_BxT=None`, scores only, and the registry adds the penalty's return-to-go:

    A_t ← A_t − β Σ_{s ≥ t} kl_s,      returns_t ← returns_t − β Σ_{s ≥ t} γ^{s−t} kl_s

(`get_advantage(name)` returns that composition; `.fn` is the function as registered).

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
import jax.numpy as jnp

from pg.core import _checks
from pg.core.multistep import discounted_returns

Array = jax.Array


@flax.struct.dataclass
class AdvantageInputs:
  """What an advantage estimator sees. Rows of one prompt's G samples are consecutive.

  scores_B: sequence scores R. mask_BxT: 1.0 on generated tokens. values_BxT: critic V(s_t) or
  None. kl_BxT: per-token KL estimate to put in the reward as −β·kl_t, or None.
  group_size: G, static. For the estimators that register needing them (else None):
  baseline_scores_B, the score of a greedy response to each row's prompt (`needs_greedy`);
  components_KxB and component_weights_K, the task's K reward components and their weights,
  R = Σ_k w_k R_k (`needs_components`).
  """
  scores_B: Array
  mask_BxT: Array
  values_BxT: Optional[Array] = None
  kl_BxT: Optional[Array] = None
  group_size: int = flax.struct.field(pytree_node=False, default=1)
  baseline_scores_B: Optional[Array] = None
  components_KxB: Optional[Array] = None
  component_weights_K: Optional[Array] = None

  def check(self, fn: str = "advantage estimator") -> "AdvantageInputs":
    """Raises, naming the argument, unless every array fits `[B, T]` / `[B]` / `[K, B]` / `[K]`
    and G divides B."""
    _checks.rank(fn, "mask_BxT", self.mask_BxT, 2)
    _checks.shape(fn, "scores_B", self.scores_B, self.mask_BxT.shape[:1], "`mask_BxT`[:1]")
    _checks.same_shape(fn, {"mask_BxT": self.mask_BxT, "values_BxT": self.values_BxT,
                            "kl_BxT": self.kl_BxT})
    if self.baseline_scores_B is not None:
      _checks.shape(fn, "baseline_scores_B", self.baseline_scores_B, self.mask_BxT.shape[:1],
                    "`mask_BxT`[:1]")
    if self.components_KxB is not None:
      _checks.rank(fn, "components_KxB", self.components_KxB, 2)
      _checks.shape(fn, "components_KxB", self.components_KxB,
                    (self.components_KxB.shape[0], self.mask_BxT.shape[0]), "(K, B)")
      if self.component_weights_K is not None:
        _checks.shape(fn, "component_weights_K", self.component_weights_K,
                      self.components_KxB.shape[:1], "`components_KxB`[:1]")
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
  key: Optional[Array] = None  # a PRNG key for losses that draw (Clip-Cov); one per minibatch

  def check(self, fn: str = "policy loss") -> "PolicyLossInputs":
    """Raises, naming the argument, unless all four arrays share one `[B, T]` shape."""
    _checks.rank(fn, "logp_BxT", self.logp_BxT, 2)
    _checks.same_shape(fn, {"logp_BxT": self.logp_BxT, "old_logp_BxT": self.old_logp_BxT,
                            "advantages_BxT": self.advantages_BxT, "mask_BxT": self.mask_BxT})
    return self


class RegisteredAdvantage:
  """An estimator with its facts; calling it composes the KL penalty (module docstring)."""

  def __init__(self, name, fn, *, needs_critic=False, min_group_size=1, handles_kl=False,
               hparams=None, needs_greedy=False, needs_components=False):
    self.name, self.fn = name, fn
    self.needs_critic, self.min_group_size = bool(needs_critic), int(min_group_size)
    self.handles_kl = bool(handles_kl)
    self.needs_greedy, self.needs_components = bool(needs_greedy), bool(needs_components)
    self.hparams = dict(hparams or {})

  def __call__(self, inputs: AdvantageInputs, hp, state) -> AdvantageOutputs:
    if self.handles_kl or inputs.kl_BxT is None:
      return self.fn(inputs, hp, state)
    inputs.check(self.name)  # kl_BxT's shape, before the estimator stops seeing it
    out = self.fn(inputs.replace(kl_BxT=None), hp, state)
    mask_BxT = jnp.asarray(inputs.mask_BxT, jnp.float32)
    penalty_BxT = -hp["kl_coef"] * jnp.asarray(inputs.kl_BxT, jnp.float32) * mask_BxT
    return AdvantageOutputs(
        out.advantages_BxT + discounted_returns(penalty_BxT, mask_BxT, 1.0),
        out.returns_BxT + discounted_returns(penalty_BxT, mask_BxT, hp["gamma"]), out.state)

  def __repr__(self):
    return f"<advantage estimator {self.name!r}: {getattr(self.fn, '__name__', self.fn)}>"


class RegisteredLoss:
  """A policy loss with its facts; calling it calls the function."""

  def __init__(self, name, fn, *, hparams=None, aggregation=None):
    self.name, self.fn = name, fn
    self.hparams = dict(hparams or {})
    self.aggregation = aggregation

  def __call__(self, inputs: PolicyLossInputs, hp):
    return self.fn(inputs, hp)

  def __repr__(self):
    return f"<policy loss {self.name!r}: {getattr(self.fn, '__name__', self.fn)}>"


ADVANTAGE_ESTIMATORS: dict[str, RegisteredAdvantage] = {}
POLICY_LOSSES: dict[str, RegisteredLoss] = {}

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


def check_new_name(table: dict, kind: str, name, override: bool) -> None:
  """Raises unless `name` is a non-empty string not yet in `table` (or `override`)."""
  if not isinstance(name, str) or not name:
    raise TypeError(f"register {kind}: the name must be a non-empty string, got {name!r}.")
  if name in table and not override:
    raise ValueError(f"register {kind}: {name!r} is already registered; pass override=True "
                     f"to replace it.")


def _register(table: dict, kind: str, name: str, fn: Callable, override: bool, make):
  check_new_name(table, kind, name, override)
  _validate_signature(kind, name, fn)
  entry = make()
  _check_declared_hparams(kind, name, entry.hparams, table)
  table[name] = entry
  return fn


def _check_declared_hparams(kind, name, declared: dict, table: dict):
  """Each declared hyperparameter is a (default, low, high, low_open, high_open, meaning) entry
  whose name no built-in uses and no other registration declares differently (a family of
  losses may share one, e.g. GSPO's clip range for its sequence and token forms, by declaring
  the identical entry)."""
  from pg.core.hparams import SPEC  # (hparams reads the registries)
  others = {n: spec for other, entry in {**ADVANTAGE_ESTIMATORS, **POLICY_LOSSES}.items()
            if other != name for n, spec in entry.hparams.items()}
  for hp_name, spec in declared.items():
    if not (isinstance(spec, tuple) and len(spec) == 6):
      raise TypeError(f"register {kind} {name!r}: hyperparameter {hp_name!r} must be declared "
                      f"as (default, low, high, low_open, high_open, meaning), got {spec!r}.")
    if hp_name in SPEC or (hp_name in others and others[hp_name] != spec):
      raise ValueError(f"register {kind} {name!r}: hyperparameter {hp_name!r} is already "
                       f"declared (by pg.hparams.SPEC or another registration, differently); "
                       f"pick a name of its own.")


def register_advantage(name: str, *, needs_critic: bool = False, min_group_size: int = 1,
                       handles_kl: bool = False, hparams: Optional[dict] = None,
                       needs_greedy: bool = False, needs_components: bool = False,
                       override: bool = False):
  """Decorator: registers `fn(inputs, hp, state) -> AdvantageOutputs` under `name`, with its
  facts: `needs_critic` (reads `inputs.values_BxT`), `min_group_size` (compares the samples of
  a group), `handles_kl` (folds `inputs.kl_BxT` into its rewards itself; otherwise the registry
  adds the KL penalty), `hparams` (its own swept hyperparameters), `needs_greedy` (reads
  `inputs.baseline_scores_B`: the train step scores a greedy response per prompt),
  `needs_components` (reads the task's reward components and weights)."""
  def register(fn):
    return _register(ADVANTAGE_ESTIMATORS, "advantage", name, fn, override,
                     lambda: RegisteredAdvantage(name, fn, needs_critic=needs_critic,
                                                 min_group_size=min_group_size,
                                                 handles_kl=handles_kl, hparams=hparams,
                                                 needs_greedy=needs_greedy,
                                                 needs_components=needs_components))
  return register


def register_policy_loss(name: str, *, hparams: Optional[dict] = None,
                         aggregation: Optional[str] = None, override: bool = False):
  """Decorator: registers `fn(inputs, hp) -> (loss_BxT, metrics)` under `name`, with its own
  swept `hparams` and the `aggregation` it is defined with (None: any)."""
  def register(fn):
    if aggregation is not None:
      from pg.core.aggregation import MODES
      if aggregation not in MODES:
        raise ValueError(f"register policy loss {name!r}: aggregation must be one of {MODES} "
                         f"or None, got {aggregation!r}.")
    return _register(POLICY_LOSSES, "policy loss", name, fn, override,
                     lambda: RegisteredLoss(name, fn, hparams=hparams, aggregation=aggregation))
  return register


def _get(table: dict, kind: str, name: str) -> Callable:
  if name not in table:
    raise KeyError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table))}.")
  return table[name]


def get_advantage(name: str) -> RegisteredAdvantage:
  return _get(ADVANTAGE_ESTIMATORS, "advantage estimator", name)


def get_policy_loss(name: str) -> RegisteredLoss:
  return _get(POLICY_LOSSES, "policy loss", name)


def declared_hparams() -> dict:
  """Every hyperparameter a registration declares: name -> SPEC-style entry."""
  return {n: spec for entry in (*ADVANTAGE_ESTIMATORS.values(), *POLICY_LOSSES.values())
          for n, spec in entry.hparams.items()}


def import_modules(names) -> None:
  """Imports each module (a dotted name, or a path to a .py file) for its registrations:
  `config.imports`. A file is imported once per process, under a name made from its path."""
  import importlib
  import importlib.util
  import os
  import sys
  for name in names or ():
    if not isinstance(name, str) or not name:
      raise TypeError(f"config.imports must hold module names or .py paths, got {name!r}.")
    if not name.endswith(".py"):
      try:
        importlib.import_module(name)
      except ImportError as e:
        raise ImportError(f"config.imports: cannot import {name!r} ({e}).") from None
      continue
    path = os.path.abspath(name)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"config.imports: no file {name!r}.")
    module_name = "pg_imported_" + "".join(c if c.isalnum() else "_" for c in path)
    if module_name in sys.modules:
      continue
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
      spec.loader.exec_module(module)
    except BaseException:
      del sys.modules[module_name]
      raise
