"""Compiled programs: the train step vmapped over runs (seeds × settings) and jitted, on a mesh.

A run is one seed of one hyperparameter setting; `Runs` holds the vmapped axis R's keys,
hyperparameters and labels, so a grid of settings × seeds is one program (`pg.run.sweep`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

import pg
from jax.sharding import PartitionSpec

from pg.policy import abstract_params, lora
from pg.train import sharding
from pg.train.build import uses_lora
from pg.train.optim import optimizer
from pg.train.step import TrainState, lora_base, make_train


def compiler_options():
  """XLA options for the train chunk, on CPU:

  - region-based copy insertion: without it XLA copies every layer's KV cache at every decode
    step (the cache is read and then written in place in the same step), 8 × 4 MiB per step at
    the benchmark's sizes;
  - YNNPACK (XLA's CPU kernel library) for matmuls only: its fused reductions ran the entropy's
    Σ p·z over a [32, 32, 49152] batch in 2.6 s, XLA's own loop in under 0.2 s
    (`experiments/bench_train.py --reference`, where the update's time goes)."""
  if jax.default_backend() == "cpu":
    return {"xla_cpu_copy_insertion_use_region_analysis": True,
            "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
  return None


def make_programs(config, task, policy, num_runs: int | None = None, on_update=None):
  """`init(keys_R, hp)` and `train_chunk(state)`, vmapped over runs and jitted (state donated).

  `keys_R` holds one PRNG key per run and `hp` one value per run for every swept hyperparameter
  (a scalar is shared by all runs). With more than one device (or `config.mesh` set), runs are
  spread over the mesh's "seed" axis and each run's batch over its "data" axis
  (`pg.train.sharding`); results do not depend on the mesh. `num_runs` defaults to
  config.num_seeds. `on_update(step, ...)` is a host callback run as each update of each run
  ends (`pg.run.progress.UpdateCounter`); None compiles none. With config.lora the frozen
  base (`init.base`) is one unbatched copy, split over "fsdp" like one run's params, that
  every run's adapters sit on; the chunk is passed it at each call.
  """
  num_runs = config.num_seeds if num_runs is None else num_runs
  mesh = sharding.make_mesh(config, num_runs)
  options = compiler_options()
  use_lora = uses_lora(config)
  if mesh is None:
    init, train_chunk = make_train(config, task, policy, on_update=on_update)
    init_fn = jax.jit(jax.vmap(init, in_axes=(0, 0, None)))
    chunk_fn = jax.jit(jax.vmap(train_chunk, in_axes=(0, None)), donate_argnums=0,
                       compiler_options=options)
    base_sharding = None
  else:
    specs = sharding.policy_param_specs(config, policy)
    # One run's params split over "fsdp"; the start (pretrained weights, or LoRA's base) is one
    # copy split the same way.
    base_sharding = sharding.param_shardings(mesh, specs)
    init, train_chunk = make_train(config, task, policy, sharding.data_sharding(mesh),
                                   on_update, base_sharding)
    per_run = sharding.seed_sharding(mesh)
    start_sharding = None
    if init.start_params is not None:
      start_sharding = sharding.param_shardings(
          mesh, sharding.policy_param_specs(config, policy, init.start_params))
    state = _state_shardings(config, policy, mesh, specs)
    init_fn = jax.jit(jax.vmap(init, in_axes=(0, 0, None), spmd_axis_name=sharding.SEED),
                      in_shardings=(per_run, per_run,
                                    base_sharding if use_lora else start_sharding),
                      out_shardings=state)
    chunk_fn = jax.jit(jax.vmap(train_chunk, in_axes=(0, None), spmd_axis_name=sharding.SEED),
                       in_shardings=(state, base_sharding if use_lora else None),
                       out_shardings=(state, per_run), donate_argnums=0,
                       compiler_options=options)
  base = None
  if use_lora:  # one frozen copy for every run, passed to each call (never a constant)
    base = lora_base(config, policy)
    base = jax.device_put(base, base_sharding) if base_sharding is not None else base
  start = base if use_lora else init.start_params

  def init_runs(keys_R, hp):
    R = keys_R.shape[0]
    return init_fn(keys_R, {k: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (R,))
                            for k, v in hp.items()}, start)
  init_runs.base = base
  return init_runs, Chunk(chunk_fn, base)


class Chunk:
  """`train_chunk(state) -> (state, metrics)`: the jitted program with LoRA's frozen base (or
  None) bound as its second argument; `.lower(state).compile()` gives the same call, compiled."""

  def __init__(self, fn, base):
    self.fn, self.base = fn, base

  def __call__(self, state):
    return self.fn(state, self.base)

  def lower(self, state):
    return _Lowered(self.fn.lower(state, self.base), self.base)

  def __getattr__(self, name):
    return getattr(self.fn, name)


class _Lowered:
  def __init__(self, lowered, base):
    self.lowered, self.base = lowered, base

  def compile(self):
    return CompiledChunk(self.lowered.compile(), self.base)

  def __getattr__(self, name):
    return getattr(self.lowered, name)


class CompiledChunk:
  """A compiled `Chunk`: called with the state alone; `memory_analysis()` as XLA's."""

  def __init__(self, compiled, base):
    self.compiled, self.base = compiled, base

  def __call__(self, state):
    return self.compiled(state, self.base)

  def __getattr__(self, name):
    return getattr(self.compiled, name)


def _state_shardings(config, policy, mesh, specs):
  """The train state's shardings: the run axis over "seed", each run's parameters, Adam moments,
  π_ref and stale copies split over "fsdp" as `specs` say (LoRA's adapters: whole)."""
  params = abstract_params(policy)
  if uses_lora(config):
    params = jax.eval_shape(lambda b: lora.init_adapters(jax.random.PRNGKey(0), b,
                                                         config.lora.targets, config.lora.rank),
                            params)
    specs = jax.tree_util.tree_map(lambda _: PartitionSpec(), params)
  opt = optimizer({"learning_rate": 0.0, "weight_decay": 0.0}, config.max_grad_norm)
  return sharding.state_shardings(mesh, TrainState, specs, opt, jax.eval_shape(opt.init, params),
                                  ref=config.kl_placement != "none" and not uses_lora(config),
                                  stale=config.get("staleness", 0) > 0)


def hparams_from_config(config):
  return pg.make_hparams(**config.hparams)


def seed_keys(config):
  return jax.random.split(jax.random.PRNGKey(config.seed), config.num_seeds)


class Runs(NamedTuple):
  """The runs one program trains side by side (the vmapped axis R)."""
  keys: jax.Array   # [R, 2] PRNG keys: run r of seed j gets seed_keys(config)[j]
  hp: dict          # name -> float32 [R] (or a scalar shared by every run)
  labels: list      # per run, a JSON-able dict: {"seed": j, swept name: value, ...}


def seed_labels(config) -> list:
  return [{"seed": j} for j in range(config.num_seeds)]


def seed_runs(config) -> Runs:
  """One run per seed, all with config.hparams: what `experiments/train.py` trains."""
  return Runs(seed_keys(config), hparams_from_config(config), seed_labels(config))
