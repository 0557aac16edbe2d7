"""RLOO on a Python reward (count up from the prompt's digit), scored via jax.pure_callback.

    python experiments/train.py --config configs/rloo.py

400 updates. With ⟨rloo.seeds: 8⟩ seeds (reports/results.md): ⟨rloo.wall: 3 min 27 s⟩ on a 2-core
CPU; mean score over the first / last 10% of updates, 95% t-interval across seeds,
⟨rloo.first10: 0.54 ± 0.03⟩ → ⟨rloo.last10: 0.83 ± 0.04⟩.
"""

from pg.run.configs import base_config


def get_config():
  c = base_config()
  c.task.name = "count_up"
  c.num_prompts = 32
  c.advantage = "rloo"
  c.hparams.learning_rate = 1e-3
  c.hparams.entropy_coef = 0.01
  c.num_chunks = 40
  return c
