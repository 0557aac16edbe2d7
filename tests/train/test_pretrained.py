"""Training from a Hugging Face checkpoint: every run starts from its weights (a fresh value head
per seed), π_ref is the checkpoint, and conflicting starting points are refused."""

import os

import jax
import numpy as np
import pytest

from pg import train
from tiny_config import tiny

CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "hf", "qwen2")


def config(**overrides):
  return tiny(num_seeds=2, kl_placement="loss", advantage="gae",
              model={"name": "llama", "init_from": CHECKPOINT, "value_head": "shared"},
              **overrides)


def test_every_run_starts_from_the_checkpoint_with_its_own_value_head():
  c = config()
  task, policy = train.build(c)
  init, _ = train.make_programs(c, task, policy)
  state = init(train.seed_keys(c), train.hparams_from_config(c))
  pretrained = policy.pretrained_params()["params"]
  for tree in (state.params, state.ref_params):
    for a, b in zip(jax.tree_util.tree_leaves(pretrained),
                    jax.tree_util.tree_leaves({k: tree["params"][k] for k in pretrained})):
      for seed in range(2):
        np.testing.assert_array_equal(b[seed], a)
  value_kernel = np.asarray(state.params["params"]["value_out"]["kernel"])
  assert not np.array_equal(value_kernel[0], value_kernel[1])


def test_two_starting_points_are_refused(tmp_path):
  c = config(init_from=str(tmp_path))
  with pytest.raises(ValueError, match="config.init_from .* and config.model.init_from"):
    train.build(c)
