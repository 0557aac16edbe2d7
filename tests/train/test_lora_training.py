"""Training with LoRA (config.lora): one frozen base shared by every run, adapters per run."""

import jax
import numpy as np
import pytest

from pg import train
from pg.policy import lora
from tiny_config import tiny

RANK = 2


def lora_config(**overrides):
  c = tiny(num_seeds=2, model={"name": "llama", "num_layers": 2, "d_model": 32, "num_heads": 2,
                               "num_kv_heads": 1, "mlp_dim": 64}, kl_placement="loss",
           **overrides)
  c.lora.rank, c.lora.alpha = RANK, 8.0
  c.hparams.learning_rate = 1e-2
  return c


def nbytes(tree):
  return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


def run(config, keys, chunks=2):
  init, chunk = train.make_programs(config, *train.build(config), num_runs=keys.shape[0])
  base_before = jax.tree_util.tree_map(np.array, init.base)
  state = init(keys, train.hparams_from_config(config))
  out = []
  for _ in range(chunks):
    state, m = chunk(state)
    out.append(jax.device_get(m))
  return state, {k: np.concatenate([o[k] for o in out], 1) for k in out[0]}, init, base_before


def test_lora_trains_adapters_on_one_frozen_base():
  config = lora_config()
  state, m, init, base_before = run(config, train.seed_keys(config))
  # The state holds adapters and their Adam moments only: no copy of the base, no π_ref.
  assert set(state.params) == {"lora"} and state.ref_params is None and state.base is None
  per_run = sum(RANK * (d_in + d_out) for _, (d_in, d_out) in lora.projections(init.base).values())
  assert nbytes(state.params) == 2 * 4 * per_run  # r (D_in + D_out) floats per kernel and run
  assert nbytes(state.opt_state) < 2 * nbytes(state.params) + 64  # Adam's moments, count
  # The base is bit-identical after training, and is what the config builds afresh.
  jax.tree_util.tree_map(np.testing.assert_array_equal, init.base, base_before)
  fresh = train.step.lora_base(config, train.build(config)[1])
  jax.tree_util.tree_map(np.testing.assert_array_equal, init.base, fresh)
  # π_ref is the base (adapters off): at update 0 (B = 0) the policy is the base (up to the
  # sampler's and the trainer's float rounding: the KL is against the sampler's log-probs).
  np.testing.assert_allclose(m["kl_to_ref"][:, 0], 0.0, atol=1e-6)
  assert np.all(m["kl_to_ref"][:, -1] != 0.0)
  # Every adapted kernel moved, by a change of rank <= r.
  for r in range(2):
    adapters = jax.tree_util.tree_map(lambda x, r=r: x[r], state.params)
    changes = lora.delta(lora.combine(init.base, adapters), config.lora.alpha)
    assert len(changes) == 2 * 7
    for name, d in changes.items():
      s = np.linalg.svd(np.asarray(d, np.float64), compute_uv=False)
      assert s[0] > 1e-4, name
      assert np.all(s[RANK:] < 1e-6 * s[0]), (name, s[:RANK + 1])


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_each_run_of_a_shared_base_program_equals_that_run_alone():
  config = lora_config()
  keys = train.seed_keys(config)
  _, together, _, _ = run(config, keys)
  for r in range(2):
    _, alone, _, _ = run(config, keys[r:r + 1])
    for k in ("mean_score", "loss", "kl_to_ref", "grad_norm"):
      np.testing.assert_allclose(alone[k][0], together[k][r], rtol=2e-5, atol=2e-6, err_msg=k)


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_a_lora_sweep_is_one_program_over_settings_and_seeds(tmp_path):
  from pg.run import sweep
  config = lora_config(num_chunks=1)
  config.sweep.learning_rate = (1e-3, 3e-2)
  summary = sweep.run(config, str(tmp_path / "sweep"), verbose=False, log=lambda *a: None)
  import json
  rows = [json.loads(line) for line in open(tmp_path / "sweep" / "results.jsonl")]
  assert len(rows) == 2 * 2 * config.updates_per_chunk  # settings × seeds × updates
  last = {(r["learning_rate"], r["seed"]): r for r in rows if r["update"] == 4}
  # Same seed, another rate: the same first samples, then other adapters.
  assert last[(1e-3, 0)]["kl_to_ref"] != last[(3e-2, 0)]["kl_to_ref"]
  assert summary is not None
