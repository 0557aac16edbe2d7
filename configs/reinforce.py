"""Vanilla REINFORCE: A = R, no baseline (the source text's estimator).

    python experiments/train.py --config configs/reinforce.py

About 50 s on a 2-core CPU (4 seeds × 400 updates; mean score 0.01 → 0.77 ± 0.23, where RLOO
reaches 0.99).
"""

from pg.run.configs import base_config


def get_config():
  c = base_config()
  c.task.name = "needle"
  c.num_prompts = 32
  c.advantage = "none"
  c.hparams.learning_rate = 1e-3
  c.hparams.entropy_coef = 0.01
  c.num_chunks = 40
  return c.lock()
