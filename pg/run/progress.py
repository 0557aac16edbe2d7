"""Progress a person can watch: "compiling… 12s" while XLA compiles (in a worker thread, so the
main thread takes Ctrl-C at once), then a bar that moves per update (a host callback from inside
the compiled chunk)."""

from __future__ import annotations

import threading
import time

import jax
import numpy as np

POLL_SECONDS = 0.05


class UpdateCounter:
  """Updates finished so far: the compiled chunk calls it (`jax.debug.callback`, one call per
  run and update, in any order, from whichever thread runs the program) with the state's step;
  `done` is the highest step + 1, and `bar` (a tqdm bar, if set) is moved there."""

  def __init__(self, done: int = 0, bar=None):
    self.done, self.bar = done, bar
    self._lock = threading.Lock()

  def __call__(self, step, *_):
    with self._lock:
      self.done = max(self.done, int(np.max(np.asarray(step))) + 1)
      if self.bar is not None and self.done > self.bar.n:
        self.bar.update(self.done - self.bar.n)


def compile_in_background(fn, args, bar=None, poll: float = 0.5):
  """`fn.lower(*args).compile()` in a worker thread while `bar` says "compiling… Ns"; the main
  thread waits in Python, so signal handlers run at once. `fn` already compiled (no `lower`)
  is returned as it is."""
  if not hasattr(fn, "lower"):
    return fn
  result = {}

  def work():
    try:
      result["compiled"] = fn.lower(*args).compile()
    except BaseException as e:  # handed to the main thread
      result["error"] = e

  worker = threading.Thread(target=work, name="pg-compile", daemon=True)
  start = time.time()
  worker.start()
  desc, shown = (bar.desc if bar is not None else ""), None
  while worker.is_alive():
    worker.join(poll)
    seconds = int(time.time() - start)
    if bar is not None and seconds != shown:  # redraw once a second, not once a poll
      bar.set_description_str(f"compiling… {seconds}s", refresh=True)
      shown = seconds
  if bar is not None:
    bar.set_description_str(desc, refresh=True)
  if "error" in result:
    raise result["error"]
  return result["compiled"]


def wait_until_ready(tree):
  """Blocks until every array of `tree` is computed, waiting in Python (not inside XLA), so a
  signal handler runs at once when the program runs on other threads."""
  arrays = [x for x in jax.tree_util.tree_leaves(tree) if isinstance(x, jax.Array)]
  while not all(x.is_ready() for x in arrays):
    time.sleep(POLL_SECONDS)
