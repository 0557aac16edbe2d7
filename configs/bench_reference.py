"""The speed benchmark's problem (issue 4's PyTorch reference point, same sizes).

    python experiments/bench_train.py --config configs/bench_reference.py
    python experiments/train.py --config configs/bench_reference.py

2-layer GPT-2-style policy, width 128, 4 heads, vocabulary 64; 64 prompts of 8 tokens × 4
samples; 24 generated tokens; RLOO; AdamW. Reward: share of generated tokens equal to a fixed
target. Training, with ⟨bench_reference.seeds: 4⟩ seeds × 100 updates (reports/results.md):
⟨bench_reference.wall: 4 min 9 s⟩ on a 2-core CPU; score 0.9 reached
⟨bench_reference.updates_to_0.9: by update 3 in every seed⟩.
"""

from pg.run.configs import base_config


def get_config():
  c = base_config()
  c.task.name = "target_token"
  c.num_seeds = 1
  c.model.update(num_layers=2, d_model=128, num_heads=4)
  c.num_prompts = 64
  c.group_size = 4
  c.advantage = "rloo"
  c.hparams.learning_rate = 1e-3
  c.hparams.weight_decay = 0.01
  c.updates_per_chunk = 10
  c.num_chunks = 10
  return c
