"""The main job: train a transformer policy with policy gradients, every seed in one program.

    python experiments/train.py                                   # configs/default.py
    python experiments/train.py --config configs/ppo.py --config.num_seeds=8 --workdir runs/ppo

Writes metrics.jsonl (one row per seed and update), TensorBoard events (tb/), curves.png and
orbax checkpoints into the workdir (default: runs/<config name>); a rerun with the same workdir
resumes from the last checkpoint.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from pg.run import experiment
from pg.train import sharding
from pg.run import sweep

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "default.py"),
    "An ml_collections config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: runs/<config name>).")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  sweep.check_not_a_sweep(config)
  sharding.maybe_initialize_distributed(config)  # multi-host: before any other JAX call
  name = os.path.splitext(os.path.basename(config_flags.get_config_filename(flags.FLAGS["config"])))[0]
  try:
    experiment.run(config, _WORKDIR.value or config.workdir or os.path.join("runs", name))
  except KeyboardInterrupt:  # the state was saved; experiment.run said where
    sys.exit(130)


if __name__ == "__main__":
  app.run(main)
