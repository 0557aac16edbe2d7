"""Ctrl-C and SIGTERM: a run in flight stops after its chunk (saved); anything else exits at once.

Two behaviours, one per owner of the process:
- A script (`pg.run.cli`) owns the process: outside the training loop a signal exits at once
  with status 130 (`exit_now`), without unwinding through JAX or interpreter teardown (which is
  where an interrupted compile used to crash). Every file a run writes is written atomically or
  is checked when read back, so nothing left behind trips a rerun.
- Inside the training loop (`StopRequest`, also when a library caller runs `experiment.run`), the
  first signal asks to stop after the chunk in flight, which is then logged and saved; a second
  one raises KeyboardInterrupt at once (the last checkpoint is what a rerun resumes from).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_STATUS = 130


def exit_now(signum, frame=None):
  """Signal handler: one line, then exit 130 without unwinding (no teardown of live threads)."""
  del frame
  try:
    sys.stdout.flush()
    sys.stderr.write(f"\ninterrupted (signal {signum}): stopped. A rerun with the same workdir "
                     f"resumes from its last checkpoint, if it has one.\n")
    sys.stderr.flush()
  finally:
    os._exit(EXIT_STATUS)


def install_exit_now():
  """Makes SIGINT and SIGTERM exit at once (status 130): for scripts, from their first line."""
  if threading.current_thread() is threading.main_thread():
    for s in SIGNALS:
      signal.signal(s, exit_now)


class StopRequest:
  """SIGINT / SIGTERM ask to stop after the chunk in flight (which is then logged and saved);
  a second signal stops at once: through the handler installed before (a script's `exit_now`),
  else by raising KeyboardInterrupt."""

  def __init__(self):
    self.signum = None
    self.previous = {}

  def __call__(self, signum, frame):
    if self.signum is not None:
      before = self.previous.get(signum)
      if before is exit_now:
        exit_now(signum, frame)
      raise KeyboardInterrupt(signum)
    self.signum = signum
    print(f"\nsignal {signum}: stopping after this chunk (send it again to stop now)",
          flush=True)

  def install(self):
    if threading.current_thread() is not threading.main_thread():
      return None
    self.previous = {s: signal.signal(s, self) for s in SIGNALS}
    return self.previous

  def uninstall(self, previous):
    for s, handler in (previous or {}).items():
      signal.signal(s, handler)
