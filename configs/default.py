"""The default job: RLOO on the credit-assignment task (the score depends on one position).

    python experiments/train.py

About 50 s on a 2-core CPU (4 seeds × 400 updates of 128 samples, one compiled program;
mean score 0.01 → 0.99 across seeds).
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
