"""Partition rules: which dimension of each parameter is split over the mesh's "fsdp" axis.

A policy lists `partition_rules`, pairs of (regex over the parameter's path, spec), the first
match winning; the path is the names from the tree's root joined by "/", as
"params/trunk/layer_0/q/kernel". A spec has one entry per dimension: the mesh axis that
dimension is split over (`FSDP`) or None (whole on every device). Vectors (norm scales, biases)
that no rule names stay whole; a matrix that no rule names is refused, so a new parameter kind
is never silently copied to every device.

    specs = param_specs(params, policy.partition_rules, fsdp=4)   # tree of PartitionSpec
    per_device_bytes(params, specs, {"fsdp": 4})                   # what one device holds

FSDP (ZeRO-3): every device holds 1/fsdp of each sharded parameter, and of its Adam moments,
which are sharded alike; XLA gathers a layer's weights where a matmul needs them and
reduce-scatters their gradients.
"""

from __future__ import annotations

import math
import re

import jax
import numpy as np
from jax.sharding import PartitionSpec

FSDP = "fsdp"


def leaf_name(path) -> str:
  """'params/trunk/layer_0/q/kernel' for a `tree_flatten_with_path` key path (dict keys,
  attributes and indices alike)."""
  def name(k):
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        return str(getattr(k, attr))
    return str(k)
  return "/".join(name(k) for k in path)


def divisors(n: int, up_to: int = 64) -> list:
  return [d for d in range(1, min(n, up_to) + 1) if n % d == 0]


def leaf_spec(name: str, shape: tuple, rules, axis_sizes: dict) -> PartitionSpec:
  """The spec of one parameter, checked: every split dimension divides its axis."""
  for pattern, spec in rules:
    if re.search(pattern, name):
      break
  else:
    if len(shape) <= 1:
      return PartitionSpec()
    raise ValueError(f"parameter {name} {tuple(shape)} matches no partition rule of this model; "
                     f"add a (pattern, spec) pair for it to the policy's partition_rules.")
  if len(spec) > len(shape):
    raise ValueError(f"partition rule {pattern!r} gives {len(spec)} dimensions for parameter "
                     f"{name} of shape {tuple(shape)}.")
  for d, axis in enumerate(spec):
    size = axis_sizes.get(axis, 1) if axis is not None else 1
    if size > 1 and shape[d] % size:
      raise ValueError(
          f"parameter {name} {tuple(shape)}: dimension {d} ({shape[d]}) does not split over "
          f"config.mesh.{axis} = {size}; {axis} sizes that split it: "
          f"{', '.join(map(str, divisors(shape[d])))}.")
  return PartitionSpec(*spec)


def param_specs(params, rules, axis_sizes: dict):
  """A PartitionSpec per leaf of `params` (arrays or `jax.ShapeDtypeStruct`s), from `rules`;
  `axis_sizes` maps mesh axes to their sizes ({"fsdp": 4}). Refuses, naming the parameter and
  the sizes that would fit, a dimension its axis does not divide."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  specs = [leaf_spec(leaf_name(path), tuple(x.shape), rules, axis_sizes) for path, x in flat]
  return jax.tree_util.tree_unflatten(treedef, specs)


def per_device_bytes(params, specs, axis_sizes: dict) -> int:
  """Bytes of `params` one device holds when each leaf is split as its spec says."""
  total = 0
  for x, spec in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(
      specs, is_leaf=lambda s: isinstance(s, PartitionSpec))):
    split = math.prod(axis_sizes.get(a, 1) for a in spec if a is not None)
    total += int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize // split
  return total
