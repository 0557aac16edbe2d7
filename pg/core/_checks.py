"""Argument checks that run at trace time and name the offending argument.

Shapes are static under `jit` and `vmap`, so shape and rank checks always run before anything
compiles. Value checks (a λ outside [0, 1]) can only run when the value is concrete; under a
trace they are skipped, which is why `pg.hparams.make_hparams` validates every swept value
before the first compile.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _shape(x):
  return tuple(np.shape(x))


def rank(fn: str, name: str, x, expected: int) -> None:
  if np.ndim(x) != expected:
    raise ValueError(
        f"{fn}: `{name}` must have rank {expected}, got rank {np.ndim(x)} "
        f"(shape {_shape(x)}).")


def shape(fn: str, name: str, x, expected: tuple, expected_from: str) -> None:
  if _shape(x) != tuple(expected):
    raise ValueError(
        f"{fn}: `{name}` must have shape {tuple(expected)} to match {expected_from}, "
        f"got {_shape(x)}.")


def same_shape(fn: str, names_and_arrays: dict) -> None:
  items = [(n, a) for n, a in names_and_arrays.items() if a is not None]
  first_name, first = items[0]
  for name, x in items[1:]:
    shape(fn, name, x, _shape(first), f"`{first_name}`")


def loss_arrays(fn: str, logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT) -> None:
  """A policy loss's four per-token arrays: `logp_BxT` of rank 2 and all four one shape."""
  rank(fn, "logp_BxT", logp_BxT, 2)
  same_shape(fn, {"logp_BxT": logp_BxT, "old_logp_BxT": old_logp_BxT,
                  "advantages_BxT": advantages_BxT, "mask_BxT": mask_BxT})


def integer(fn: str, name: str, x) -> None:
  if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
    raise TypeError(f"{fn}: `{name}` must hold integer token ids, got dtype {jnp.result_type(x)}.")


def scalar(fn: str, name: str, x) -> None:
  if np.ndim(x) != 0:
    raise ValueError(f"{fn}: `{name}` must be a scalar, got shape {_shape(x)}.")


def is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def outside(v: float, lo: float, hi: float, lo_open=False, hi_open=False):
  """The interval as text if `v` lies outside it (or is NaN), else None."""
  below = v <= lo if lo_open else v < lo
  above = v >= hi if hi_open else v > hi
  if np.isnan(v) or below or above:
    return ("(" if lo_open else "[") + f"{lo}, {hi}" + (")" if hi_open else "]")
  return None


def in_range(fn: str, name: str, x, lo: float, hi: float, *, lo_open=False, hi_open=False):
  """Raises if a concrete `x` lies outside [lo, hi] (open ends as asked); skipped under a trace."""
  scalar(fn, name, x)
  if not is_concrete(x):
    return
  interval = outside(float(x), lo, hi, lo_open, hi_open)
  if interval:
    raise ValueError(f"{fn}: `{name}` must lie in {interval}, got {float(x)}.")


def group_size(fn: str, batch: int, g: int, *, minimum: int = 1) -> None:
  if not isinstance(g, (int, np.integer)) or isinstance(g, bool):
    raise TypeError(f"{fn}: `group_size` must be a static Python int, got {type(g).__name__}.")
  if g < minimum:
    why = " (leave-one-out needs another sample in the group)" if minimum == 2 else ""
    raise ValueError(f"{fn}: `group_size` must be >= {minimum}{why}, got {g}.")
  if batch % g:
    raise ValueError(
        f"{fn}: batch size {batch} is not a multiple of `group_size` {g}; samples of one prompt "
        f"must sit in consecutive rows.")
