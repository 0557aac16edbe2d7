"""A training process for the crash tests: `python crash_worker.py WORKDIR CACHE_DIR [--die-in-save N]`.

It runs `pg.experiment.run` on a tiny needle config (12 chunks of 5 updates, a checkpoint every
2 chunks, 2 seeds) in WORKDIR; a rerun resumes, as `experiments/train.py` does. With
`--die-in-save N` a watcher thread sends this process SIGKILL as soon as the temporary directory
of a checkpoint write for chunk >= N appears, so the kill lands in the middle of that write.
Kills at random times during chunks are sent from outside, by the test.
"""

import os
import signal
import sys
import threading
import time

import jax

from pg.run import experiment
from tiny_config import tiny


def config():
  return tiny(num_chunks=12, checkpoint_every=2)


def die_in_save(checkpoints_dir: str, first_step: int):
  """SIGKILLs this process once a checkpoint of chunk >= first_step is being written."""
  while True:
    try:
      names = os.listdir(checkpoints_dir)
    except FileNotFoundError:
      names = []
    for name in names:
      step = name.split(".")[0]
      if "tmp" in name and step.isdigit() and int(step) >= first_step:
        print(f"KILLING during the write of {name}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.0005)


def main(argv):
  workdir, cache = argv[1], argv[2]
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  if "--die-in-save" in argv:
    first_step = int(argv[argv.index("--die-in-save") + 1])
    threading.Thread(target=die_in_save, args=(os.path.join(workdir, "checkpoints"), first_step),
                     daemon=True).start()
  experiment.run(config(), workdir, verbose=False)
  print("FINISHED", flush=True)


if __name__ == "__main__":
  main(sys.argv)
