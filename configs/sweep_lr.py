"""Learning rate × estimator on the default task: 2 estimators × 3 rates × 4 seeds = 24 runs.

    python experiments/sweep.py --config configs/sweep_lr.py

Two compiles (one per estimator), each running its 3 rates × 4 seeds side by side: about
110 s on a 2-core CPU. Results: runs/sweep_lr/results.md, score_vs_learning_rate.png (RLOO
peaks at 1e-3 with 0.66 ± 0.33 after 200 updates; GRPO stays near 0 on this task).
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
  return c.lock()
