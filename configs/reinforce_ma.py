"""REINFORCE with a moving-average baseline (its state lives in the train state).

    python experiments/train.py --config configs/reinforce_ma.py

400 updates. With ⟨reinforce_ma.seeds: 8⟩ seeds (reports/results.md): ⟨reinforce_ma.wall: 3 min 30 s⟩
on a 2-core CPU; mean score over the first / last 10% of updates, 95% t-interval across seeds,
⟨reinforce_ma.first10: 0.02 ± 0.01⟩ → ⟨reinforce_ma.last10: 0.87 ± 0.12⟩; per seed:
⟨reinforce_ma.per_seed: 0.98, 0.94, 0.86, 0.67, 0.98, 0.63, 0.89, 0.96⟩.
Against RLOO's ⟨default.last10: 0.84 ± 0.14⟩ (configs/default.py), by Welch's t-test over the
seeds: ⟨reinforce_ma.vs_default: not significantly different, p = 0.77⟩.
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
