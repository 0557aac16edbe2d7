"""Fitting a group's runs into memory: XLA's memory analysis of the compiled program against the
device's free memory, and the split into equal batches."""

from __future__ import annotations

import os

import jax

from pg import train

MEMORY_FRACTION = 0.8  # of the free device memory, when sweep.memory_budget_mib is 0


def batch_sizes(num_runs: int, max_per_batch: int) -> list[int]:
  """Sizes of equal batches (the last may be smaller) covering num_runs, none above the cap."""
  if num_runs <= 0:
    return []
  n = -(-num_runs // max(1, max_per_batch))
  size = -(-num_runs // n)
  return [size] * (num_runs // size) + ([num_runs % size] if num_runs % size else [])


def memory_budget_bytes(config) -> int:
  """Bytes one program may use per device: sweep.memory_budget_mib, or 80% of the free memory
  (the accelerator's own, or the host's MemAvailable on CPU, shared by its devices)."""
  mib = config.sweep.get("memory_budget_mib", 0)
  if mib:
    return int(mib * 2**20)
  device = jax.devices()[0]
  stats = device.memory_stats() if device.platform != "cpu" else None
  if stats and "bytes_limit" in stats:
    free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
  else:
    free = host_available_bytes() // max(1, jax.local_device_count())
  return int(MEMORY_FRACTION * free)


def host_available_bytes() -> int:
  """The host's free memory (Linux MemAvailable, else free pages)."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def program_bytes(compiled) -> int:
  """Peak bytes XLA plans for one compiled program: arguments, outputs not aliased to donated
  arguments, and temporaries."""
  m = compiled.memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
             + m.temp_size_in_bytes)


def compile_programs(group, runs: train.Runs, on_update=None):
  """`(init, compiled train_chunk)` for these runs of a group (`grid.Group`), and the
  program's bytes (`on_update`: see `pg.train.make_programs`)."""
  init, chunk = train.make_programs(group.config, group.task, group.policy, len(runs.labels),
                                    on_update)
  abstract = jax.eval_shape(init, runs.keys, runs.hp)
  compiled = chunk.lower(abstract).compile()
  return (init, compiled), program_bytes(compiled)


