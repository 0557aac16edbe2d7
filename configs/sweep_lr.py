"""Learning rate × estimator on the default task: 2 estimators × 3 rates × 4 seeds = 24 runs.

    python experiments/sweep.py --config configs/sweep_lr.py

Two compiles (one per estimator), each running its 3 rates × 4 seeds side by side. Results:
runs/sweep_lr/results.md, score_vs_learning_rate.png. With ⟨sweep_lr.seeds: 8⟩ seeds
(reports/results.md; ⟨sweep_lr.wall: 7 min 11 s⟩ on a 2-core CPU), each estimator's best rate by the
mean score over the last 10% of 200 updates (95% t-interval across seeds):
RLOO ⟨sweep_lr.rloo.best: 0.40 ± 0.14 at learning_rate 0.001⟩,
GRPO ⟨sweep_lr.grpo.best: 0.02 ± 0.04 at learning_rate 0.0003⟩.
"""

from pg.run.configs import base_config


def get_config():
  c = base_config()
  c.task.name = "needle"
  c.num_prompts = 32
  c.num_seeds = 4
  c.hparams.entropy_coef = 0.01
  c.updates_per_chunk = 10
  c.num_chunks = 20
  c.sweep.advantage = ("rloo", "grpo")
  c.sweep.learning_rate = (3e-4, 1e-3, 3e-3)
  return c
