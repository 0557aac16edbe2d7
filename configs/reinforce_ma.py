"""REINFORCE with a moving-average baseline (its state lives in the train state).

    python experiments/train.py --config configs/reinforce_ma.py

TIME on a 2-core CPU.
"""

from pg.configs import base_config


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
