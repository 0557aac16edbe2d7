"""The fork's estimator and loss swept against RLOO and PPO: 2 × 2 choices × 2 rates × 3 seeds.

    python experiments/sweep.py --config experiments/fork_example/sweep_config.py

Four compiles (one per estimator × loss), each running 2 learning rates × 3 seeds side by side.
Two PPO epochs per batch of samples, so the losses see off-policy ratios and differ. About
130 s on a 2-core CPU; results in runs/sweep_config/results.md.
"""

import os

from pg.run.configs import base_config

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config():
  c = base_config(imports=(os.path.join(HERE, "my_estimators.py"),))  # "rank", "w_reinforce"
  c.task.name = "needle"
  c.num_prompts = 32
  c.num_seeds = 3
  c.ppo_epochs = 2
  c.num_minibatches = 2
  c.hparams.entropy_coef = 0.01
  c.updates_per_chunk = 10
  c.num_chunks = 12
  c.sweep.advantage = ("rloo", "rank")
  c.sweep.policy_loss = ("ppo", "w_reinforce")
  c.sweep.learning_rate = (1e-3, 3e-3)
  return c
