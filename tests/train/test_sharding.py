"""Scale-out on virtual CPU devices: the mesh changes where work runs, not what it computes."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from pg import train

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


@pytest.mark.slow
def test_fsdp_meshes_match_one_device_and_really_split_the_state(tmp_path):
  worker(8, "fsdp", tmp_path / "out.json")
  result = json.loads((tmp_path / "out.json").read_text())
  lora_ref = result.pop("lora 1x1x1")
  for mesh in ("lora 2x1x4", "lora 1x1x8"):  # LoRA on a base split over fsdp: same numbers
    got = result.pop(mesh)
    for k, v in lora_ref["metrics"].items():
      np.testing.assert_allclose(got["metrics"][k], v, rtol=1e-5, atol=1e-5,
                                 err_msg=f"{mesh}: {k}")
    assert "fsdp" in got["base_q_spec"] and "seed" not in got["base_q_spec"], got
    assert got["base_bytes"] < lora_ref["base_bytes"] / 3, (mesh, got["base_bytes"])
  ref = result.pop("1x1x1")
  for mesh, got in result.items():
    for k, v in ref["metrics"].items():
      np.testing.assert_allclose(got["metrics"][k], v, rtol=1e-5, atol=1e-5,
                                 err_msg=f"{mesh}: {k}")
    fsdp = int(mesh.split("x")[2])
    assert "fsdp" in got["q_spec"], (mesh, got["q_spec"])
    b = got["bytes"]
    # Device 0 holds exactly its shards: 1/fsdp of every matrix (vectors whole), and the same
    # for each Adam moment and for π_ref.
    assert b["params"] == b["expected_params"], (mesh, b)
    assert b["ref"] == b["params"] and b["adam"] == 2 * b["params"], (mesh, b)
    assert b["params"] < 1.1 * b["whole_params"] / fsdp, (mesh, b)
  assert ref["bytes"]["params"] == ref["bytes"]["whole_params"]


@pytest.mark.slow
def test_fsdp_checkpoint_saved_on_8_devices_restores_on_2(tmp_path):
  worker(8, "fsdp_run", tmp_path / "a", 4, 4)    # uninterrupted, fsdp 4
  worker(8, "fsdp_run", tmp_path / "b", 2, 8)    # half on 8 devices, each run split 8 ways
  worker(2, "fsdp_run", tmp_path / "b", 4, 2)    # resumed on 2 devices, split 2 ways
  rows_a, rows_b = read_rows(tmp_path / "a" / "metrics.jsonl"), read_rows(
      tmp_path / "b" / "metrics.jsonl")
  assert len(rows_a) == len(rows_b) == 2 * 4 * 5
  for ra, rb in zip(rows_a, rows_b):
    assert (ra["seed"], ra["update"]) == (rb["seed"], rb["update"])
    for k in ra:
      assert rb[k] == pytest.approx(ra[k], rel=1e-5, abs=1e-5), (ra["update"], k)


@pytest.mark.parametrize("mesh,devices,match", [
    ((3, 0), 8, "must equal the number of devices"),
    ((8, 1), 8, "multiple of the mesh's seed axis"),
    ((1, 8), 8, "must split over the mesh's data"),
    ((-1, 0), 8, ">= 0"),
    ((1, 1, 3), 8, r"config.mesh.fsdp \(3\) must divide the number of devices, 8"),
    ((1, 0, 0), 8, r"config.mesh.fsdp must be an int >= 1"),
    ((1, 0, 4), 8, r"must split over the mesh's data × fsdp axes \(2 × 4\)"),
    ((2, 2, 4), 8, r"seed × data × fsdp = 2 × 2 × 4 must equal"),
])
def test_bad_meshes_are_refused(mesh, devices, match):
  config = configs.base_config()
  config.num_seeds, config.num_prompts, config.group_size = 4, 3, 2  # batch 6
  config.mesh.seed, config.mesh.data = mesh[:2]
  if len(mesh) > 2:
    config.mesh.fsdp = mesh[2]
  with pytest.raises(ValueError, match=match):
    sharding.mesh_shape(config, devices)


def llama(d_model=32):
  from tiny_config import tiny
  return tiny(model={"name": "llama", "num_layers": 1, "d_model": d_model, "num_heads": 2,
                     "num_kv_heads": 1, "mlp_dim": 64})


def test_a_parameter_the_fsdp_axis_does_not_split_is_named_with_what_fits():
  config = llama(d_model=36)
  config.mesh.fsdp = 8
  _, policy = train.build(config)
  with pytest.raises(ValueError, match=r"parameter params/trunk/embed/embedding \(\d+, 36\): "
                     r"dimension 1 \(36\) does not split over config.mesh.fsdp = 8; fsdp "
                     r"sizes that split it: 1, 2, 3, 4, 6, 9, 12, 18, 36"):
    sharding.policy_param_specs(config, policy)


def test_a_matrix_no_rule_names_is_refused():
  from pg.policy import abstract_params, partition
  _, policy = train.build(llama())
  rules = [r for r in policy.partition_rules if "gate" not in r[0]]
  with pytest.raises(ValueError, match=r"params/trunk/layer_0/gate/kernel \(32, 64\) matches "
                     r"no partition rule"):
    partition.param_specs(abstract_params(policy), rules, {"fsdp": 2})


def test_partition_rules_split_the_model_dimension_of_every_matrix():
  from pg.policy import abstract_params, partition
  _, policy = train.build(llama())
  params = abstract_params(policy)
  specs = partition.param_specs(params, policy.partition_rules, {"fsdp": 4})
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  leaf_specs = jax.tree_util.tree_leaves(specs, is_leaf=lambda s: isinstance(s, PartitionSpec))
  for (path, x), spec in zip(flat, leaf_specs):
    name = partition.leaf_name(path)
    if x.ndim == 1:
      assert spec == PartitionSpec(), name
    else:  # exactly one dimension split, and it is d_model (32)
      split = [d for d, a in enumerate(spec) if a == "fsdp"]
      assert len(split) == 1 and x.shape[split[0]] == 32, (name, x.shape, spec)
  whole = partition.per_device_bytes(params, specs, {})
  vectors = sum(4 * x.size for _, x in flat if x.ndim == 1)
  assert partition.per_device_bytes(params, specs, {"fsdp": 4}) == (whole - vectors) // 4 + vectors


def test_automatic_mesh_prefers_whole_seeds():
  config = configs.base_config()
  config.num_seeds = 4
  assert sharding.mesh_shape(config, 8) == (4, 2, 1)
  assert sharding.mesh_shape(config, 1) == (1, 1, 1)
  config.num_seeds = 3
  assert sharding.mesh_shape(config, 4) == (1, 4, 1)
  config.mesh.fsdp = 2
  assert sharding.mesh_shape(config, 8) == (1, 4, 2)
