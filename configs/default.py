"""The default job: RLOO on the credit-assignment task (the score depends on one position).

    python experiments/train.py

About 100 s on a 2-core CPU (97 s measured, start-up and report included; 4 seeds × 400
updates of 128 samples, one compiled program). Mean score over the first / last 10% of updates,
95% interval across the 4 seeds: 0.018 ± 0.012 → 0.892 ± 0.176 (with --config.num_seeds=8
--config.seed=1: 0.019 ± 0.012 → 0.939 ± 0.059).
"""

from pg.run.configs import base_config


def get_config():
  c = base_config()
  c.task.name = "needle"
  c.num_prompts = 32
  c.advantage = "rloo"
  c.hparams.learning_rate = 1e-3
  c.hparams.entropy_coef = 0.01
  c.updates_per_chunk = 10
  c.num_chunks = 40
  return c.lock()
