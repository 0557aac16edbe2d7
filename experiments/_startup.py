"""Imported first by every script: from here on, Ctrl-C during start-up (the imports of JAX
and pg take seconds) exits at once with status 130 and one line, not a traceback."""

import os
import signal
import sys


def _exit_now(signum, frame):
  del frame
  sys.stderr.write(f"\ninterrupted (signal {signum}) during start-up; nothing was written.\n")
  sys.stderr.flush()
  os._exit(130)


for _signal in (signal.SIGINT, signal.SIGTERM):
  signal.signal(_signal, _exit_now)
