"""The tiny needle config that the train, shared-prompt, crash and bad-input tests start from
(2 seeds, 8 prompts × 4 samples, one layer of width 32): it learns within a few chunks on a
CPU."""

import jax
import numpy as np

from pg import train
from pg.run import configs


def tiny(**overrides):
  """The tiny config with fields replaced; a dict value updates that block (`model={...}`),
  or replaces the model block when it names an architecture."""
  c = configs.base_config()
  c.task.name = "needle"
  c.task.options = {"length": 4, "num_symbols": 2, "exclusive": False}
  c.model.update(num_layers=1, d_model=32, num_heads=2)
  c.num_seeds, c.num_prompts, c.group_size = 2, 8, 4
  c.updates_per_chunk, c.num_chunks, c.checkpoint_every = 5, 2, 1
  c.hparams.learning_rate = 3e-3
  for k, v in overrides.items():
    if k == "model" and "name" in v:  # another architecture: its own options, not gpt's
      c.model = v
    elif isinstance(v, dict):
      c[k].update(v)
    else:
      c[k] = v
  return c


def run_chunks(config, n, hp=None):
  """Builds, compiles and runs `n` chunks of `config`: (state, metrics `[R, n·K]`, chunk)."""
  init, chunk = train.make_programs(config, *train.build(config))
  state = init(train.seed_keys(config), hp or train.hparams_from_config(config))
  out = []
  for _ in range(n):
    state, m = chunk(state)
    out.append(jax.device_get(m))
  return state, {k: np.concatenate([o[k] for o in out], axis=1) for k in out[0]}, chunk
