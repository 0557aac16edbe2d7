"""Runs in a fresh process with N virtual CPU devices (XLA_FLAGS set before JAX starts).

    python tests/sharding_worker.py DEVICES compare OUT.json [CHECKPOINT]
    python tests/sharding_worker.py DEVICES run WORKDIR NUM_CHUNKS [CHECKPOINT]
    python tests/sharding_worker.py DEVICES fsdp OUT.json
    python tests/sharding_worker.py DEVICES fsdp_run WORKDIR NUM_CHUNKS FSDP

CHECKPOINT: a Hugging Face model directory the "llama" policy starts from (default: the tiny
GPT config).
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={sys.argv[1]}"

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_config import tiny  # noqa: E402

from pg.run import experiment
from pg import train  # noqa: E402
from pg.policy import abstract_params, partition  # noqa: E402


def model_config(checkpoint=None):
  return {"model": {"name": "llama", "init_from": checkpoint, "value_head": "shared"},
          "advantage": "gae"} if checkpoint else {}


def metrics_for(seed_axis, data_axis, chunks=2, checkpoint=None):
  config = tiny(num_seeds=4, **model_config(checkpoint))
  config.mesh.seed, config.mesh.data = seed_axis, data_axis
  init, chunk = train.make_programs(config, *train.build(config))
  state = init(train.seed_keys(config), train.hparams_from_config(config))
  out = []
  for _ in range(chunks):
    state, m = chunk(state)
    out.append(jax.device_get(m))
  shardings = {str(leaf.sharding) for leaf in jax.tree_util.tree_leaves(state.params)}
  return {k: np.concatenate([o[k] for o in out], 1).tolist() for k in out[0]}, shardings


def llama_config(**overrides):
  """A tiny random-init Llama (two layers, width 32) with a KL penalty in the loss, so the
  reference policy is part of the state too."""
  return tiny(num_seeds=2, model={"name": "llama", "num_layers": 2, "d_model": 32,
                                  "num_heads": 4, "num_kv_heads": 2, "mlp_dim": 64},
              kl_placement="loss", **overrides)


def device0_bytes(tree) -> int:
  """Bytes of `tree`'s leaves held by the first device."""
  d0 = jax.devices()[0]
  return int(sum(s.data.nbytes for x in jax.tree_util.tree_leaves(tree)
                 for s in x.addressable_shards if s.device == d0))


def fsdp_layouts(out_path):
  """Metrics, shardings and device 0's bytes of params, Adam moments and π_ref per mesh."""
  result = {}
  for seed_axis, data_axis, fsdp in [(1, 1, 1), (2, 1, 4), (1, 2, 4), (1, 1, 8), (2, 2, 2)]:
    config = llama_config()
    config.mesh.seed, config.mesh.data, config.mesh.fsdp = seed_axis, data_axis, fsdp
    task, policy = train.build(config)
    init, chunk = train.make_programs(config, task, policy)
    state = init(train.seed_keys(config), train.hparams_from_config(config))
    out = []
    for _ in range(2):
      state, m = chunk(state)
      out.append(jax.device_get(m))
    one_run = abstract_params(policy)
    specs = partition.param_specs(one_run, policy.partition_rules, {"fsdp": fsdp})
    runs_per_device = config.num_seeds // seed_axis
    adam = [t for t in jax.tree_util.tree_leaves(
        state.opt_state, is_leaf=lambda t: hasattr(t, "mu")) if hasattr(t, "mu")][0]
    result[f"{seed_axis}x{data_axis}x{fsdp}"] = {
        "metrics": {k: np.concatenate([o[k] for o in out], 1).tolist() for k in out[0]},
        "q_spec": str(state.params["params"]["trunk"]["layer_0"]["q"]["kernel"].sharding.spec
                      if fsdp * seed_axis * data_axis > 1 else ""),
        "bytes": {"params": device0_bytes(state.params), "ref": device0_bytes(state.ref_params),
                  "adam": device0_bytes((adam.mu, adam.nu)),
                  "expected_params": runs_per_device * partition.per_device_bytes(
                      one_run, specs, {"fsdp": fsdp}),
                  "whole_params": runs_per_device * partition.per_device_bytes(one_run, specs,
                                                                               {})}}
  for seed_axis, data_axis, fsdp in [(1, 1, 1), (2, 1, 4), (1, 1, 8)]:  # LoRA on a split base
    config = llama_config()
    config.lora.rank = 2
    config.mesh.seed, config.mesh.data, config.mesh.fsdp = seed_axis, data_axis, fsdp
    init, chunk = train.make_programs(config, *train.build(config))
    state = init(train.seed_keys(config), train.hparams_from_config(config))
    out = []
    for _ in range(2):
      state, m = chunk(state)
      out.append(jax.device_get(m))
    q = init.base["params"]["trunk"]["layer_0"]["q"]["kernel"]
    result[f"lora {seed_axis}x{data_axis}x{fsdp}"] = {
        "metrics": {k: np.concatenate([o[k] for o in out], 1).tolist() for k in out[0]},
        "base_q_spec": str(getattr(q.sharding, "spec", "")),
        "base_bytes": device0_bytes(init.base)}
  with open(out_path, "w") as f:
    json.dump(result, f)


def main():
  assert jax.device_count() == int(sys.argv[1]), jax.devices()
  if sys.argv[2] == "compare":
    result = {}
    checkpoint = sys.argv[4] if len(sys.argv) > 4 else None
    layouts = [(1, 1), (2, 4), (0, 0)] if checkpoint else [(1, 1), (4, 2), (2, 4), (1, 8), (0, 0)]
    for seed_axis, data_axis in layouts:
      metrics, shardings = metrics_for(seed_axis, data_axis, checkpoint=checkpoint)
      result[f"{seed_axis}x{data_axis}"] = {"metrics": metrics, "shardings": sorted(shardings)}
    with open(sys.argv[3], "w") as f:
      json.dump(result, f)
  elif sys.argv[2] == "fsdp":
    fsdp_layouts(sys.argv[3])
  elif sys.argv[2] == "fsdp_run":
    config = llama_config(num_chunks=int(sys.argv[4]), checkpoint_every=2)
    config.mesh.fsdp = int(sys.argv[5])
    experiment.run(config, sys.argv[3], verbose=False)
  else:
    checkpoint = sys.argv[5] if len(sys.argv) > 5 else None
    config = tiny(num_seeds=4, num_chunks=int(sys.argv[4]), checkpoint_every=2,
                  **model_config(checkpoint))
    experiment.run(config, sys.argv[3], verbose=False)


if __name__ == "__main__":
  main()
