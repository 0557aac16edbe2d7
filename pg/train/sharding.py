"""Scale-out on JAX's own sharding: a ("seed", "data") device mesh, set by config.

Whole seeds are spread over the "seed" axis; when there are fewer seeds than devices, each seed's
batch is split over the "data" axis (data parallel). `jit` with `vmap(spmd_axis_name="seed")`
and one sharding constraint on the batch let XLA's partitioner place everything else. Multi-host
runs call `jax.distributed.initialize()` first (`maybe_initialize_distributed`); the mesh then
spans every host's devices.

config.mesh.seed / config.mesh.data: axis sizes; 0 means "choose": seeds take as many devices as
divide num_seeds, data takes the rest. seed = data = 1 means no sharding (one device).
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SEED, DATA = "seed", "data"


def mesh_shape(config, num_devices: int, num_runs: int | None = None):
  """(seed, data) axis sizes for `num_devices`, validated with the fields named.

  `num_runs` (default config.num_seeds) is the length of the vmapped run axis: seeds, or
  settings × seeds in a sweep."""
  runs = config.num_seeds if num_runs is None else num_runs
  seed, data = int(config.mesh.seed), int(config.mesh.data)
  batch = config.num_prompts * config.group_size
  if seed == 1 and data == 1:  # explicitly unsharded: one device, whatever else there is
    return 1, 1
  if seed < 0 or data < 0:
    raise ValueError(f"config.mesh.seed and config.mesh.data must be >= 0 (0: choose), got "
                     f"{seed}, {data}.")
  if seed == 0 and data == 0:
    seed = math.gcd(runs, num_devices)
    data = num_devices // seed
  elif seed == 0:
    seed = num_devices // data
  elif data == 0:
    data = num_devices // seed
  if seed * data != num_devices:
    raise ValueError(f"config.mesh: seed × data = {seed} × {data} must equal the number of "
                     f"devices, {num_devices}.")
  if runs % seed:
    what = "config.num_seeds" if num_runs is None else "the number of runs"
    raise ValueError(f"{what} ({runs}) must be a multiple of the mesh's seed axis ({seed}).")
  if batch % data or (batch // config.num_minibatches) % data:
    raise ValueError(f"the batch num_prompts × group_size = {batch} (and each of its "
                     f"{config.num_minibatches} minibatches) must split over the mesh's data "
                     f"axis ({data}).")
  return seed, data


def make_mesh(config, num_runs: int | None = None):
  """The ("seed", "data") mesh over all devices, or None on a single device."""
  devices = jax.devices()
  seed, data = mesh_shape(config, len(devices), num_runs)
  if seed * data == 1:
    return None
  return Mesh(np.asarray(devices).reshape(seed, data), (SEED, DATA))


def seed_sharding(mesh):
  """Leading (seed) axis over "seed", the rest replicated: every leaf of a vmapped state."""
  return NamedSharding(mesh, PartitionSpec(SEED))


def data_sharding(mesh):
  """A per-seed batch axis over "data" (inside the seed-vmapped step)."""
  return NamedSharding(mesh, PartitionSpec(DATA))


def maybe_initialize_distributed(config) -> bool:
  """Calls `jax.distributed.initialize()` when the config or the environment asks for it.

  Asked by `config.distributed = True`, or by JAX_COORDINATOR_ADDRESS in the environment (with
  JAX_NUM_PROCESSES and JAX_PROCESS_ID), which `initialize()` reads itself; on Cloud TPU and
  SLURM it finds its peers alone.
  """
  if config.get("distributed", False) or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()
    return True
  return False
