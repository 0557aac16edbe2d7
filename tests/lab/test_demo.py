"""The main job's demo path, shrunk: config validation, one compile for all seeds, learning."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import pg
from pg.lab import demo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "configs"))
import enumerable_demo  # noqa: E402


def tiny_config(**overrides):
  config = enumerable_demo.get_config()
  with config.unlocked():
    config.num_seeds, config.num_updates = 3, 60
    config.update(overrides)
  return config


def test_demo_learns_and_runs_all_seeds_in_one_program():
  config = tiny_config(advantage="rloo")
  metrics = demo.run(config, pg.make_hparams(learning_rate=0.1))
  j = np.asarray(metrics["exact_J"])
  assert j.shape == (3, 60)
  assert np.all(j[:, -5:].mean(axis=1) > j[:, :5].mean(axis=1) + 0.3)  # every seed improves
  assert np.all(np.asarray(metrics["grad_cosine_to_exact"])[:, :6].mean(axis=1) > 0)


def test_changing_a_swept_value_does_not_recompile():
  config = tiny_config(num_updates=3)
  train = jax.jit(jax.vmap(demo.make_train(config), in_axes=(0, None)))
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  a = train(keys, pg.make_hparams(learning_rate=0.1))["exact_J"]
  b = train(keys, pg.make_hparams(learning_rate=0.01, temperature=0.7))["exact_J"]
  assert train._cache_size() == 1
  assert not np.allclose(a[:, -1], b[:, -1])


@pytest.mark.parametrize("override,match", [
    ({"advantage": "nope"}, "known: "),
    ({"policy_loss": "nope"}, "known: "),
    ({"aggregation": "mean"}, "config.aggregation"),
    ({"advantage": "rloo", "group_size": 1}, "config.group_size"),
    ({"target_token": 7}, "config.target_token"),
    ({"length": 30}, "too many"),
])
def test_bad_config_fails_before_compiling(override, match):
  with pytest.raises((KeyError, ValueError), match=match):
    demo.make_train(tiny_config(**override))


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_main_script_runs(tmp_path):
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "estimator_demo.py"),
         "--config.num_updates=20", "--config.num_seeds=2", f"--config.workdir={tmp_path}"]
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
  assert "| rloo |" in out and (tmp_path / "curves.png").stat().st_size > 10_000
