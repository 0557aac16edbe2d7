"""Swept hyperparameters: a flat dict of float32 scalars, traced under `jit`.

Everything a user may sweep is a value here, never a Python constant baked into the program, so
`jax.vmap` can run several settings in one compile and a changed value never recompiles.
Shapes, loop counts and names (estimator, loss, aggregation mode) are static config instead.

`make_hparams(**overrides)` validates names and ranges eagerly, before anything compiles. The
names are `SPEC`'s plus those a registered loss or estimator declares (`pg.registry`): a fork's
loss brings its own swept value without editing this file.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from pg.core import _checks, registry

INF = math.inf

# name: (default, low, high, low_open, high_open, meaning)
SPEC = {
    "learning_rate": (1e-3, 0.0, INF, True, True, "optimizer step size"),
    "weight_decay": (0.0, 0.0, INF, False, True, "decoupled weight decay (AdamW)"),
    "gamma": (1.0, 0.0, 1.0, False, False, "discount γ"),
    "lam": (0.95, 0.0, 1.0, False, False, "GAE λ"),
    "kl_coef": (0.0, 0.0, INF, False, True, "β, KL penalty coefficient"),
    "baseline_decay": (0.9, 0.0, 1.0, False, True, "moving-average baseline decay"),
    "adv_eps": (1e-6, 0.0, INF, True, True, "ε in GRPO's std and in whitening"),
    "ppo_eps_low": (0.2, 0.0, 1.0, False, True, "PPO clip range below 1"),
    "ppo_eps_high": (0.2, 0.0, INF, False, True, "PPO clip range above 1"),
    "dual_clip": (0.0, 0.0, INF, False, True, "dual-clip c (> 1 turns it on; ≤ 1 is off)"),
    "value_clip": (0.2, 0.0, INF, True, True, "value-loss clip range"),
    "value_coef": (0.5, 0.0, INF, False, True, "value-loss coefficient"),
    "entropy_coef": (0.0, 0.0, INF, False, True, "entropy-bonus coefficient"),
    "temperature": (1.0, 0.0, INF, True, True, "sampling temperature τ"),
    "rc_cap": (2.0, 0.0, INF, True, True, "rollout correction: truncation C of TIS weights"),
    "rc_low": (0.5, 0.0, INF, False, True, "rollout correction: lower bound of MIS / Geo-RS"),
    "rc_high": (2.0, 0.0, INF, True, True, "rollout correction: upper bound of MIS / Geo-RS"),
    "opsm_delta": (1e-3, 0.0, INF, False, True,
                   "off-policy sequence mask: mean log-ratio δ past which A < 0 is dropped"),
    "overlong_penalty_factor": (1.0, 0.0, INF, False, True,
                                "weight of DAPO's overlong penalty in the reward"),
}


def spec() -> dict:
  """Every swept hyperparameter: `SPEC` and the registrations' declared ones."""
  return {**SPEC, **registry.declared_hparams()}


def _check_value(name, value):
  _, lo, hi, lo_open, hi_open, meaning = spec()[name]
  interval = _checks.outside(float(value), lo, hi, lo_open, hi_open)
  if interval:
    raise ValueError(f"hyperparameter `{name}` ({meaning}) must lie in {interval}, got {value}.")


def make_hparams(**overrides) -> dict:
  """Defaults from `SPEC`, with `overrides` checked by name and range; float32 scalars.

  An override may also be an array of values (for a sweep axis); each entry is checked.
  """
  known = spec()
  unknown = sorted(set(overrides) - set(known))
  if unknown:
    raise KeyError(f"unknown hyperparameter(s) {unknown}; known: {', '.join(sorted(known))}.")
  hp = {name: _as_float32(name, overrides.get(name, entry[0])) for name, entry in known.items()}
  for name, value in hp.items():  # NumPy only: nothing compiles, refused or not
    for v in value.ravel().tolist():
      _check_value(name, v)
  return {name: jax.device_put(value) for name, value in hp.items()}  # a copy, no compile


def _as_float32(name, value) -> np.ndarray:
  try:
    x = np.asarray(value, np.float32)
  except (TypeError, ValueError):
    x = None
  if x is None or isinstance(value, (str, bytes)) or np.iscomplexobj(value):
    raise TypeError(f"hyperparameter `{name}` must be a number or an array of numbers, "
                    f"got {value!r}.")
  return x
