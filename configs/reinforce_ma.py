"""REINFORCE with a moving-average baseline (its state lives in the train state).

    python experiments/train.py --config configs/reinforce_ma.py

400 updates. With ⟨reinforce_ma.seeds: 8⟩ seeds (reports/results.md): ⟨reinforce_ma.wall: 50 s⟩
on a 2-core CPU; mean score over the first / last 10% of updates, 95% t-interval across seeds,
⟨reinforce_ma.first10: 0.01 ± 0.01⟩ → ⟨reinforce_ma.last10: 0.68 ± 0.45⟩; per seed:
⟨reinforce_ma.per_seed: pending⟩.
Against RLOO's ⟨default.last10: 0.94 ± 0.06⟩ (configs/default.py), by Welch's t-test over the
seeds: ⟨reinforce_ma.vs_default: lower, p = 0.01⟩.
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
  return c
