"""The default job with the Llama-family policy: RLOO on the credit-assignment task.

    python experiments/train.py --config configs/llama.py

configs/default.py with `config.model.name = "llama"` at the same width: RMSNorm, rotary
positions, 4 query heads over 2 key/value heads, a SwiGLU MLP, tied embeddings, trained from
scratch. With ⟨llama.seeds: 8⟩ seeds (reports/results.md, `python experiments/reproduce.py --only
llama`): ⟨llama.wall: 2 min 0 s⟩ on a 2-core CPU, compile included; mean score over the first / last
10% of updates, 95% t-interval across seeds, ⟨llama.first10: 0.00 ± 0.00⟩ →
⟨llama.last10: 0.29 ± 0.06⟩.
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
  c.model = {"name": "llama", "num_layers": 2, "d_model": 64, "num_heads": 4,
             "num_kv_heads": 2, "mlp_dim": 176, "value_head": "none", "dtype": "float32"}
  return c
