"""The main job: train a transformer policy with policy gradients, every seed in one program.

    python experiments/train.py                                   # configs/default.py
    python experiments/train.py --config configs/ppo.py --config.num_seeds=8 --workdir runs/ppo
    python experiments/train.py --config configs/grpo.py --config.task.options.num_digits=2

Writes metrics.jsonl (one row per seed and update), TensorBoard events (tb/), curves.png and
orbax checkpoints into the workdir (default: runs/<config name>); a rerun with the same workdir
resumes from the last checkpoint. Errors print one line (--debug: the traceback).
"""

import _startup  # noqa: F401  (first: Ctrl-C during the imports exits cleanly)

import os

from absl import flags, logging

from pg.run import cli, experiment, sweep
from pg.train import sharding

_CONFIG = cli.config_flag(os.path.join(os.path.dirname(__file__), "..", "configs",
                                       "default.py"))
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: runs/<config name>).")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  sweep.check_not_a_sweep(config)
  sharding.maybe_initialize_distributed(config)  # multi-host: before any other JAX call
  name = cli.config_name()
  experiment.run(config, _WORKDIR.value or config.workdir or os.path.join("runs", name),
                 title=name)


if __name__ == "__main__":
  cli.run(main)
