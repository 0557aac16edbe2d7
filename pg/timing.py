"""Wall-clock timing of compiled JAX functions, for the benchmark scripts."""

import time

import jax


def best_time(fn, *args, repeats: int = 10) -> float:
  """Fastest of `repeats` calls of `fn(*args)`, in seconds, after one untimed call (compile and
  warm-up); each call is waited for with `jax.block_until_ready`."""
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return best
