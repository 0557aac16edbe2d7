"""REINFORCE with a moving-average baseline (its state lives in the train state).

    python experiments/train.py --config configs/reinforce_ma.py

About 50 s on a 2-core CPU (4 seeds × 400 updates; mean score 0.01 → 0.68 ± 0.45: one seed
stalls).
"""

from pg.run.configs import base_config


def get_config():
  c = base_config()
  c.task.name = "needle"
  c.num_prompts = 32
  c.advantage = "moving_average"
  c.hparams.baseline_decay = 0.9
  c.hparams.learning_rate = 1e-3
  c.hparams.entropy_coef = 0.01
  c.num_chunks = 40
  return c.lock()
