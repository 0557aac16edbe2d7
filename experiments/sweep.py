"""Sweep hyperparameters and seeds: each group of settings is one compiled program.

    python experiments/sweep.py --config configs/sweep_lr.py
    python experiments/sweep.py --config configs/sweep_lr.py \
        --config.sweep.learning_rate='(1e-4, 3e-4, 1e-3)' --config.num_seeds=8

Continuous hyperparameters (config.sweep.<name>, see pg.hparams.SPEC) are vmapped with the seeds
in one compile; structural choices (config.sweep.advantage, .policy_loss, .group_size,
.model.d_model, ...) compile once per value, one after another. Writes results.md / .csv /
.jsonl and figures into the workdir (default: runs/<config name>); a rerun skips finished runs
and resumes an interrupted batch. See pg/run/sweep/. Errors print one line (--debug: the
traceback).
"""

import _startup  # noqa: F401  (first: Ctrl-C during the imports exits cleanly)

import os

from absl import flags, logging

from pg.run import cli, sweep
from pg.train import sharding

_CONFIG = cli.config_flag(os.path.join(os.path.dirname(__file__), "..", "configs",
                                       "sweep_lr.py"),
                          "An ml_collections config file with a `sweep` block.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: runs/<config name>).")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  sharding.maybe_initialize_distributed(config)
  name = cli.config_name()
  sweep.run(config, _WORKDIR.value or config.workdir or os.path.join("runs", name))


if __name__ == "__main__":
  cli.run(main)
