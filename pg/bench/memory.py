"""Memory of the compiled update: full fine-tuning against LoRA, one run against R in a program,
and FSDP's per-device bytes for a model too large to hold.

`measure(config, runs)` (one row, run in a fresh process by `experiments/bench_memory.py` so
each peak is its own) compiles the chunk program for `runs` runs and reads XLA's memory
analysis of it: the state it takes (params, Adam moments, π_ref; with LoRA the adapters and
their moments, plus the one shared base), the temporaries it plans, and the peak it plans
(`pg.run.sweep.memory.program_bytes`). When that fits in the memory the machine has free it
then runs one update and reads the process's peak resident memory.

`abstract_table(options, vocab_size, devices)`: per-device bytes of the train state for a
model given by its shape only (`jax.eval_shape` and the policy's partition rules: no weights),
whole on each device and split over an "fsdp" axis of `devices`.
"""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np

from pg import train
from pg.bench import llm
from pg.policy import abstract_params, build_policy, lora, partition
from pg.run.checkpoints import state_bytes
from pg.run.sweep.memory import host_available_bytes, program_bytes

GB = 1e9


def measure(config, runs: int, execute: bool = True) -> dict:
  """One row: XLA's plan for `runs` runs of `config` and, if it fits, the measured peak."""
  task, policy = train.build(config)
  init, chunk = train.make_programs(config, task, policy, num_runs=runs)
  keys = jax.random.split(jax.random.PRNGKey(0), runs)
  hp = train.hparams_from_config(config)
  abstract = jax.eval_shape(init, keys, hp)
  start = time.perf_counter()
  compiled = chunk.lower(abstract).compile()
  compile_s = time.perf_counter() - start
  m = compiled.memory_analysis()
  row = {"mode": f"LoRA r={config.lora.rank}" if config.lora.rank else "full fine-tune",
         "runs": runs, "state GB": state_bytes(abstract) / GB,
         "base GB": state_bytes(init.base) / GB if init.base is not None else 0.0,
         "XLA temp GB": m.temp_size_in_bytes / GB, "XLA peak GB": program_bytes(compiled) / GB,
         "compile s": compile_s, "peak RSS GB": float("nan"), "s/update": float("nan")}
  free = host_available_bytes()
  if not execute or program_bytes(compiled) > 0.9 * free:
    row["note"] = (f"not run: XLA plans {program_bytes(compiled) / GB:.1f} GB, "
                   f"{free / GB:.1f} GB free")
    return row
  state = init(keys, hp)
  jax.block_until_ready(state)
  start = time.perf_counter()
  state, metrics = compiled(state)
  jax.block_until_ready(metrics)
  row["s/update"] = (time.perf_counter() - start) / config.updates_per_chunk
  row["peak RSS GB"] = llm.peak_rss_mib() * 2**20 / GB
  row["note"] = ""
  return row


COLUMNS = ("mode", "runs", "state GB", "base GB", "XLA temp GB", "XLA peak GB", "peak RSS GB",
           "s/update", "note")


def _fmt(x):
  if isinstance(x, float):
    return "–" if np.isnan(x) else f"{x:.2f}"
  return str(x)


def markdown(rows, columns=COLUMNS) -> str:
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
  return "\n".join(lines)


# Qwen2.5-7B's shape (Qwen/Qwen2.5-7B config.json): 7.6B parameters, untied embeddings.
QWEN2_5_7B = ({"num_layers": 28, "d_model": 3584, "num_heads": 28, "num_kv_heads": 4,
               "mlp_dim": 18944, "tie_embeddings": False, "qkv_bias": True,
               "rope_theta": 1e6, "rms_eps": 1e-6}, 152064)


def abstract_table(options, vocab_size, devices: int = 8, rank: int = 16, runs: int = 8,
                   targets: str = r"layer_\d+/") -> list[dict]:
  """Per-device GB of the float32 train state (params, Adam's two moments, π_ref) for a model
  of this shape, whole and with FSDP over `devices`; and of LoRA (`runs` runs of rank `rank`
  adapters on one base, π_ref = the base)."""
  policy = build_policy(ml_collections.ConfigDict({"name": "llama", **options}),
                        vocab_size=vocab_size, max_len=4096)
  params = abstract_params(policy)
  rows = []
  for fsdp in (1, devices):
    specs = partition.param_specs(params, policy.partition_rules, {"fsdp": fsdp})
    p = partition.per_device_bytes(params, specs, {"fsdp": fsdp})
    rows.append({"setup": f"full fine-tune, 1 run, fsdp {fsdp}", "params GB": p / GB,
                 "Adam GB": 2 * p / GB, "π_ref GB": p / GB, "adapters GB": 0.0,
                 "total GB": 4 * p / GB})
  adapters = jax.eval_shape(lambda b: lora.init_adapters(jax.random.PRNGKey(0), b, targets,
                                                         rank), params)
  a = state_bytes(adapters)
  for fsdp in (1, devices):
    specs = partition.param_specs(params, policy.partition_rules, {"fsdp": fsdp})
    p = partition.per_device_bytes(params, specs, {"fsdp": fsdp})
    rows.append({"setup": f"LoRA r={rank}, {runs} runs, fsdp {fsdp}", "params GB": p / GB,
                 "Adam GB": 2 * runs * a / GB, "π_ref GB": 0.0, "adapters GB": runs * a / GB,
                 "total GB": (p + 3 * runs * a) / GB})
  for r in rows:
    r["parameters B"] = state_bytes(params) / 4 / 1e9
  return rows


ABSTRACT_COLUMNS = ("setup", "params GB", "Adam GB", "π_ref GB", "adapters GB", "total GB")
