"""A policy's parameters on disk (flax msgpack), checked against the policy's shapes."""

from __future__ import annotations

import os

import flax.serialization
import jax
import jax.numpy as jnp

from pg.policy import abstract_params
from pg.policy.partition import leaf_name


def save_params(path, params):
  """Params as flax msgpack bytes (a stage's output that a later config starts from)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as f:
    f.write(flax.serialization.to_bytes(params))


def load_params(path, policy):
  """Params saved by `save_params`, checked against `policy`'s shapes (config.init_from)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.init_from: no params at {path!r}.")
  template = abstract_params(policy)  # shapes only: nothing runs or compiles
  with open(path, "rb") as f:
    try:
      raw = flax.serialization.msgpack_restore(f.read())
    except Exception as e:  # msgpack raises several types for a file of another kind
      raise ValueError(f"config.init_from: {path!r} is not a params file written by "
                       f"pg.train.save_params ({type(e).__name__}: {e}).") from None
  diff = shape_mismatch(raw, template)
  if diff:
    raise ValueError(f"config.init_from: the params at {path!r} do not fit config.model "
                     f"({diff}).")
  return jax.tree_util.tree_map(jnp.asarray, raw)


def _leaf_shapes(tree) -> dict:
  """'a/b/c' -> shape for every array leaf (dict keys, attributes and indices alike)."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {leaf_name(path): tuple(getattr(x, "shape", ())) for path, x in flat}


def shape_mismatch(saved, expected, limit: int = 3) -> str:
  """'' when both trees hold the same leaves with the same shapes; else the first few
  differences ('path: saved (8, 16), expected (8, 32)', missing and extra leaves)."""
  got, want = _leaf_shapes(saved), _leaf_shapes(expected)
  diffs = [f"{k}: saved {got[k]}, expected {want[k]}" for k in want if k in got
           and got[k] != want[k]]
  diffs += [f"{k}: not saved" for k in want if k not in got]
  diffs += [f"{k}: saved, not expected" for k in got if k not in want]
  more = f"; and {len(diffs) - limit} more" if len(diffs) > limit else ""
  return "; ".join(diffs[:limit]) + more
