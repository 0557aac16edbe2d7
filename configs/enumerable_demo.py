"""Score-function estimators on an enumerable problem (V=3, T=4), checked against exact ∇J.

    python experiments/estimator_demo.py

⟨demo.wall: 13 s⟩ on a 2-core CPU (4 estimators × 8 seeds × 200 updates, one compile each;
reports/results.md).
Override any field: --config.num_updates=500 --config.learning_rate=0.1
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = 8
  c.vocab_size = 3
  c.length = 4
  c.target_token = 2
  c.init_scale = 0.5
  c.num_prompts = 4           # one "prompt" (the empty one), drawn num_prompts × group_size times
  c.group_size = 4
  c.num_updates = 200
  c.advantages = ("none", "moving_average", "rloo", "grpo")  # compared side by side
  c.advantage = "rloo"        # overwritten per entry of `advantages`
  c.policy_loss = "reinforce"
  c.aggregation = "seq-mean-token-sum"
  c.learning_rate = 0.05      # swept values: traced, never recompile
  c.temperature = 1.0
  c.baseline_decay = 0.9
  c.workdir = "workdir/enumerable_demo"
  return c
