"""Vanilla REINFORCE: A = R, no baseline (the source text's estimator).

    python experiments/train.py --config configs/reinforce.py

400 updates. With ⟨reinforce.seeds: 8⟩ seeds (reports/results.md): ⟨reinforce.wall: 3 min 21 s⟩ on a
2-core CPU; mean score over the first / last 10% of updates, 95% t-interval across seeds,
⟨reinforce.first10: 0.03 ± 0.01⟩ → ⟨reinforce.last10: 0.62 ± 0.17⟩; against RLOO's
⟨default.last10: 0.84 ± 0.14⟩ (configs/default.py), by Welch's t-test over the seeds:
⟨reinforce.vs_default: lower, p = 0.034⟩.
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
  return c
