"""The fork's "rank" estimator and "w_reinforce" loss with a KL penalty to π_ref in the reward, and
the fork's own task ("distinct", a Python reward), all imported by `config.imports`.

    python experiments/train.py --config experiments/fork_example/rank_kl_config.py

"rank" reads the scores only; the −β·kl_t per-token penalty reaches its advantages through the
registry's composition (pg.registry), as it does for the built-in RLOO. About 20 s on a 2-core
CPU (2 seeds × 60 updates).
"""

import os

from pg.run.configs import base_config

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config():
  c = base_config(imports=(os.path.join(HERE, "my_estimators.py"),
                           os.path.join(HERE, "my_task.py")))
  c.task.name = "distinct"
  c.task.options = {"length": 6}
  c.num_seeds = 2
  c.advantage = "rank"
  c.policy_loss = "w_reinforce"
  c.kl_placement = "reward"
  c.hparams.kl_coef = 0.05
  c.hparams.w_reinforce_lambda = 0.3
  c.updates_per_chunk = 10
  c.num_chunks = 6
  return c
