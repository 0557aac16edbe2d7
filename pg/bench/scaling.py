"""How an update's time grows with response length, model width and seeds; memory at V = 32k.

Each table starts from one base config and changes one thing per row. A row: seconds per
update for the whole compiled update, the sampler alone (same batch, jitted) and the rest
(scoring, advantages, loss, optimizer), so the part that grows fastest is visible. A row whose
update would not fit in 80% of the memory (RAM on a CPU) runs in micro-batches
(`grad_accum_steps`, doubled until it fits), and the row says how many. The memory table
compiles (without running) one update at a large vocabulary and long responses, with the LM
head and log-probs dense or chunked over the vocabulary, and reads XLA's temporary-buffer size.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from pg import train
from pg.bench.timing import best_time, chunk_times
from pg.bench.train import build_group, changed
from pg.policy import sampler
from pg.run import sweep
from pg.run.tables import markdown_table

# name -> (values, values with --quick, the config fields a value sets)
AXES = {
    "response length": ((24, 128, 512, 1024), (24, 128, 256),
                        lambda t: {"task.options": {"length": t}}),
    "model width": ((128, 256, 512, 1024), (128, 256),
                    lambda d: {"model.d_model": d, "model.num_heads": max(4, d // 64)}),
    "seeds": ((1, 8, 64), (1, 8), lambda s: {"num_seeds": s}),
}


def memory_budget() -> int:
  """Bytes one program may ask for: 80% of the accelerator's memory, or of the RAM on a CPU."""
  stats = jax.devices()[0].memory_stats() or {}
  if "bytes_limit" in stats:
    return int(0.8 * stats["bytes_limit"])
  return int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def fit_in_memory(config, budget: int):
  """`(group, init, compiled chunk)`: one update compiled; while its bytes
  (`pg.run.sweep.program_bytes`) exceed `budget`, config.grad_accum_steps is doubled
  (micro-batches of whole groups each) and it compiles again. group.config keeps the
  micro-batch count that fits."""
  batch = config.num_prompts * config.group_size
  group = build_group(config)
  while True:
    (init, compiled), need = sweep.compile_programs(group, train.seed_runs(group.config))
    more = 2 * group.config.grad_accum_steps
    if need <= budget or batch % (more * config.group_size):
      return group, init, compiled
    group = build_group(changed(group.config, grad_accum_steps=more))


def time_update(config, repeats: int):
  """`(total, sampling, micro-batches)`: the best of `repeats` seconds per update, of the
  sampler alone on the same batch, and the grad_accum_steps the update ran with."""
  group, init, chunk = fit_in_memory(config, memory_budget())
  config, task, policy = group.config, group.task, group.policy
  runs = train.seed_runs(config)
  times, _, state = chunk_times(chunk, init(runs.keys, runs.hp), repeats)
  prompts_SxNxP = jnp.zeros((config.num_seeds, config.num_prompts, task.prompt_len), jnp.int32)
  sample = jax.jit(jax.vmap(lambda params, prompts_NxP, key: sampler.sample(  # as the step does
      policy, params, prompts_NxP, key, max_new_tokens=task.max_new_tokens, eos_id=task.eos_id,
      pad_id=task.pad_id, group_size=config.group_size)),
      compiler_options=train.compiler_options())
  sampling = best_time(sample, state.params, prompts_SxNxP, runs.keys, repeats=repeats)
  return min(times) / config.updates_per_chunk, sampling, config.grad_accum_steps


def scaling_table(base, name: str, values, fields, repeats: int) -> str:
  """`time_update` of `base` changed by `fields(value)` for each value, as a markdown table; a
  row that fails on the device (out of memory, say) says so and the table goes on."""
  rows = []
  for v in values:
    try:
      total, sampling, micro = time_update(changed(base, **fields(v)), repeats)
    except jax.errors.JaxRuntimeError as e:  # e.g. RESOURCE_EXHAUSTED
      rows.append([v, f"failed: {str(e).splitlines()[0][:80]}", "", "", "", ""])
      continue
    rows.append([v, f"{total:.3f}", f"{sampling:.3f}", f"{max(total - sampling, 0):.3f}",
                 f"{100 * sampling / total:.0f}%", micro])
  return markdown_table(
      [name, "update s", "sampling s", "rest s", "sampling share", "micro-batches"], rows)


def memory_table(base, vocab_size: int, length: int, chunk_sizes=(None, 4096, 1024)) -> str:
  """XLA's temporary MiB of one compiled update of 2 prompts × 2 samples at this vocabulary and
  response length, per logprob_chunk_size (None: the dense LM head)."""
  rows = []
  for chunk_size in chunk_sizes:
    config = changed(base, **{"task.options": {"vocab_size": vocab_size, "length": length}},
                     num_prompts=2, group_size=2, logprob_chunk_size=chunk_size)
    group = build_group(config)
    (_, compiled), _ = sweep.compile_programs(group, train.seed_runs(config))
    rows.append([chunk_size, f"{compiled.memory_analysis().temp_size_in_bytes / 2**20:,.0f}"])
  return markdown_table(["logprob_chunk_size", "temp MiB"], rows)


def report(base, quick: bool, repeats: int):
  """Prints every table: one update per chunk of `base`, one axis changed per table."""
  base = changed(base, updates_per_chunk=1)
  for name, (values, quick_values, fields) in AXES.items():
    print(f"\n## time per update vs {name}\n")
    print(scaling_table(base, name, quick_values if quick else values, fields, repeats),
          flush=True)
  B, T, V = 4, 1024, 32768
  print(f"\n## temporary memory of one update, V = {V}, T = {T}, B = {B} (a float32 [B, P+T, V] "
        f"is {4 * B * (T + 8) * V / 2**20:,.0f} MiB)\n")
  print(memory_table(base, V, T), flush=True)
