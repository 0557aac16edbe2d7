"""Scale-out on virtual CPU devices: the mesh changes where work runs, not what it computes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pg.run import configs
from pg.train import sharding

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(ROOT, "tests", "sharding_worker.py")


def worker(*args):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, WORKER, *map(str, args)], capture_output=True,
                       text=True, timeout=600, env=env)
  assert out.returncode == 0, out.stderr[-3000:]


LLAMA = os.path.join(ROOT, "tests", "fixtures", "hf", "qwen2")


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint", [None, LLAMA], ids=["gpt", "pretrained_llama"])
def test_sharded_runs_match_the_unsharded_run(tmp_path, checkpoint):
  worker(8, "compare", tmp_path / "out.json", *([checkpoint] if checkpoint else []))
  result = json.loads((tmp_path / "out.json").read_text())
  ref = result.pop("1x1")
  assert all("SingleDeviceSharding" in s for s in ref["shardings"])
  for mesh, got in result.items():
    assert all("seed" in s for s in got["shardings"]), (mesh, got["shardings"])
    for k, v in ref["metrics"].items():
      # Same seeds, same numbers; only the order of cross-device sums may differ.
      np.testing.assert_allclose(got["metrics"][k], v, rtol=1e-5, atol=1e-5,
                                 err_msg=f"{mesh}: {k}")


def read_rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint", [None, LLAMA], ids=["gpt", "pretrained_llama"])
def test_checkpoint_saved_on_8_devices_restores_on_4(tmp_path, checkpoint):
  more = [checkpoint] if checkpoint else []
  worker(8, "run", tmp_path / "a", 4, *more)     # uninterrupted, 8 devices (mesh 4 × 2)
  worker(8, "run", tmp_path / "b", 2, *more)     # half, 8 devices
  worker(4, "run", tmp_path / "b", 4, *more)     # resumed on 4 devices (mesh 4 × 1)
  rows_a, rows_b = read_rows(tmp_path / "a" / "metrics.jsonl"), read_rows(
      tmp_path / "b" / "metrics.jsonl")
  assert len(rows_a) == len(rows_b) == 4 * 4 * 5
  for ra, rb in zip(rows_a, rows_b):
    assert (ra["seed"], ra["update"]) == (rb["seed"], rb["update"])
    for k in ra:
      assert rb[k] == pytest.approx(ra[k], rel=1e-5, abs=1e-5), (ra["update"], k)


@pytest.mark.parametrize("mesh,devices,match", [
    ((3, 0), 8, "must equal the number of devices"),
    ((8, 1), 8, "multiple of the mesh's seed axis"),
    ((1, 8), 8, "must split over the mesh's data"),
    ((-1, 0), 8, ">= 0"),
])
def test_bad_meshes_are_refused(mesh, devices, match):
  config = configs.base_config()
  config.num_seeds, config.num_prompts, config.group_size = 4, 3, 2  # batch 6
  config.mesh.seed, config.mesh.data = mesh
  with pytest.raises(ValueError, match=match):
    sharding.mesh_shape(config, devices)


def test_automatic_mesh_prefers_whole_seeds():
  config = configs.base_config()
  config.num_seeds = 4
  assert sharding.mesh_shape(config, 8) == (4, 2)
  assert sharding.mesh_shape(config, 1) == (1, 1)
  config.num_seeds = 3
  assert sharding.mesh_shape(config, 4) == (1, 4)
