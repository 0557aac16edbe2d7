"""Scale-out on JAX's own sharding: a ("seed", "data", "fsdp") device mesh, set by config.

Whole seeds are spread over the "seed" axis; when there are fewer seeds than devices, each seed's
batch is split over the "data" axis (data parallel). With `config.mesh.fsdp = n > 1` each run's
parameters, Adam moments, reference policy and stale copies are split n ways too (FSDP, the
dimension per parameter kind from the policy's `partition_rules`, `pg.policy.partition`), and
the batch is split over data × fsdp. `jit` with `vmap(spmd_axis_name="seed")`, the state's
shardings and constraints on the batch and the parameters let XLA's partitioner place the rest
(gathering a layer's weights where a matmul needs them). Multi-host runs call
`jax.distributed.initialize()` first (`maybe_initialize_distributed`); the mesh then spans every
host's devices.

config.mesh.seed / config.mesh.data: axis sizes; 0 means "choose": seeds take as many devices as
divide num_seeds, data takes the rest. seed = data = fsdp = 1 means no sharding (one device).
config.mesh.fsdp (default 1) must divide the number of devices; seed × data × fsdp = devices.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pg.policy import abstract_params
from pg.policy.partition import FSDP, param_specs

SEED, DATA = "seed", "data"
AXES = (SEED, DATA, FSDP)


def fsdp_size(config) -> int:
  n = config.mesh.get("fsdp", 1)
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f"config.mesh.fsdp must be an int >= 1 (1: parameters whole on every "
                     f"device), got {n!r}.")
  return n


def mesh_shape(config, num_devices: int, num_runs: int | None = None):
  """(seed, data, fsdp) axis sizes for `num_devices`, validated with the fields named.

  `num_runs` (default config.num_seeds) is the length of the vmapped run axis: seeds, or
  settings × seeds in a sweep."""
  runs = config.num_seeds if num_runs is None else num_runs
  seed, data, fsdp = int(config.mesh.seed), int(config.mesh.data), fsdp_size(config)
  batch = config.num_prompts * config.group_size
  if seed == 1 and data == 1 and fsdp == 1:  # explicitly unsharded: one device
    return 1, 1, 1
  if seed < 0 or data < 0:
    raise ValueError(f"config.mesh.seed and config.mesh.data must be >= 0 (0: choose), got "
                     f"{seed}, {data}.")
  if num_devices % fsdp:
    raise ValueError(f"config.mesh.fsdp ({fsdp}) must divide the number of devices, "
                     f"{num_devices}.")
  total, num_devices = num_devices, num_devices // fsdp
  if seed == 0 and data == 0:
    seed = math.gcd(runs, num_devices)
    data = num_devices // seed
  elif seed == 0:
    seed = num_devices // data
  elif data == 0:
    data = num_devices // seed
  if seed * data * fsdp != total:
    raise ValueError(f"config.mesh: seed × data × fsdp = {seed} × {data} × {fsdp} must equal "
                     f"the number of devices, {total}.")
  if runs % seed:
    what = "config.num_seeds" if num_runs is None else "the number of runs"
    raise ValueError(f"{what} ({runs}) must be a multiple of the mesh's seed axis ({seed}).")
  split = data * fsdp
  if batch % split or (batch // config.num_minibatches) % split:
    raise ValueError(f"the batch num_prompts × group_size = {batch} (and each of its "
                     f"{config.num_minibatches} minibatches) must split over the mesh's data × "
                     f"fsdp axes ({data} × {fsdp}).")
  return seed, data, fsdp


def make_mesh(config, num_runs: int | None = None):
  """The ("seed", "data", "fsdp") mesh over all devices, or None on a single device."""
  devices = jax.devices()
  shape = mesh_shape(config, len(devices), num_runs)
  if shape == (1, 1, 1):
    return None
  return Mesh(np.asarray(devices).reshape(shape), AXES)


def seed_sharding(mesh):
  """Leading (seed) axis over "seed", the rest replicated: every leaf of a vmapped state."""
  return NamedSharding(mesh, PartitionSpec(SEED))


def data_sharding(mesh):
  """A per-seed batch axis over "data" × "fsdp" (inside the seed-vmapped step)."""
  return NamedSharding(mesh, PartitionSpec((DATA, FSDP)))


def policy_param_specs(config, policy, params=None):
  """A PartitionSpec per parameter of one run (`params`: default the policy's own, as shapes)
  for config.mesh.fsdp; all whole when it is 1. Refuses a dimension the axis does not divide,
  and a policy without partition rules."""
  fsdp = fsdp_size(config)
  params = abstract_params(policy) if params is None else params
  rules = getattr(policy, "partition_rules", None)
  if fsdp > 1 and rules is None:
    raise ValueError(f"config.mesh.fsdp = {fsdp}: model {type(policy).__name__} has no "
                     f"partition_rules to split its parameters by.")
  return param_specs(params, rules or (), {FSDP: fsdp})


def param_shardings(mesh, specs, lead=()):
  """NamedShardings of a parameter tree split as `specs`, after `lead` leading axes (("seed",)
  for the runs' axis; (SEED, None) for the stale copies)."""
  return jax.tree_util.tree_map(lambda spec: NamedSharding(mesh, PartitionSpec(*lead, *spec)),
                                specs, is_leaf=lambda s: isinstance(s, PartitionSpec))


def state_shardings(mesh, state_cls, specs, optimizer, opt_state, *, ref: bool, stale: bool):
  """The shardings of a vmapped `TrainState` (a prefix tree): every leaf's run axis over
  "seed"; params, π_ref, the stale copies and Adam's moments split as `specs` (`optimizer`'s
  state `opt_state`, one run's, as shapes, tells which of its leaves are parameter-shaped)."""
  per_run = NamedSharding(mesh, PartitionSpec(SEED))
  params = param_shardings(mesh, specs, (SEED,))
  opt = optax.tree_map_params(optimizer, lambda _, sh: sh, opt_state, params,
                              transform_non_params=lambda _: per_run)
  return state_cls(params=params, ref_params=params if ref else None, opt_state=opt,
                   baseline_state=per_run, key=per_run, step=per_run, hp=per_run,
                   halted=per_run,
                   past_params=param_shardings(mesh, specs, (SEED, None)) if stale else None)


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
