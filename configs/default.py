"""The default job: RLOO on the credit-assignment task (the score depends on one position).

    python experiments/train.py

4 seeds × 400 updates of 128 samples, one compiled program. With ⟨default.seeds: 8⟩ seeds
(reports/results.md, `python experiments/reproduce.py --only default`): ⟨default.wall: 3 min 16 s⟩ on a
2-core CPU, compile included; mean score over the first / last 10% of updates, 95% t-interval
across seeds, ⟨default.first10: 0.02 ± 0.01⟩ → ⟨default.last10: 0.84 ± 0.14⟩.
"""

from pg.run.configs import base_config


def get_config():
  c = base_config()
  c.task.name = "needle"
  c.num_prompts = 32
  c.advantage = "rloo"
  c.hparams.learning_rate = 1e-3
  c.hparams.entropy_coef = 0.01
  c.updates_per_chunk = 10
  c.num_chunks = 40
  return c
