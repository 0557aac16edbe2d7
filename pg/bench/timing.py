"""Wall-clock timing of compiled JAX functions, for the benchmarks."""

import time

import jax


def timed(fn, *args):
  """`(fn(*args), seconds)`: a result and the wall time it took (a compile, say)."""
  start = time.perf_counter()
  out = fn(*args)
  return out, time.perf_counter() - start


def call_times(fn, *args, repeats: int, warmup: int = 1):
  """`(seconds, out)`: the wall time of each of `repeats` calls of `fn(*args)` after `warmup`
  untimed calls (compile and warm-up), each waited for with `jax.block_until_ready`, and the
  last call's output. Each output is dropped before the next call, so two never live at once."""
  seconds, out = [], None
  for i in range(warmup + repeats):
    out = None
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    if i >= warmup:
      seconds.append(time.perf_counter() - start)
  return seconds, out


def best_time(fn, *args, repeats: int = 10) -> float:
  """Fastest of `repeats` calls of `fn(*args)`, in seconds, after one untimed call (compile and
  warm-up); each call is waited for with `jax.block_until_ready`."""
  return min(call_times(fn, *args, repeats=repeats)[0])


def chunk_times(chunk, state, repeats: int):
  """`(seconds, metrics, state)` of a train chunk program (`state -> (state, metrics)`, the state
  donated): `repeats` timed calls after one warm-up, each on the state the last one returned;
  the timed calls' metrics and the last state."""
  holder, metrics = [state], []

  def step():
    holder[0], m = chunk(holder[0])
    metrics.append(m)
    return m
  seconds, _ = call_times(step, repeats=repeats)
  return seconds, metrics[1:], holder[0]
