"""Runs in a fresh process with N virtual CPU devices (XLA_FLAGS set before JAX starts).

    python tests/sharding_worker.py DEVICES compare OUT.json [CHECKPOINT]
    python tests/sharding_worker.py DEVICES run WORKDIR NUM_CHUNKS [CHECKPOINT]

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
  else:
    checkpoint = sys.argv[5] if len(sys.argv) > 5 else None
    config = tiny(num_seeds=4, num_chunks=int(sys.argv[4]), checkpoint_every=2,
                  **model_config(checkpoint))
    experiment.run(config, sys.argv[3], verbose=False)


if __name__ == "__main__":
  main()
