"""The RLHF pipeline: π_ref on CPython's docs, VADER-labelled preferences, a Bradley–Terry reward
model, then RL against it with a KL penalty, β swept (gold vs proxy against √KL).

    python experiments/rlhf.py --config configs/rlhf.py
    python experiments/rlhf.py --config configs/rlhf.py --stages=rl,report   # one stage alone

RL: 3 β × 2 seeds × 200 updates in one program; writes runs/rlhf/summary.md and
gold_vs_proxy.png. With ⟨rlhf.seeds: 8⟩ seeds per β (reports/results.md; every stage
⟨rlhf.wall: 19 min 59 s⟩ on a 2-core CPU): held-out reward-model accuracy
⟨rlhf.rm_accuracy_gold: 66%⟩ on pairs whose gold scores differ (⟨rlhf.rm_accuracy_labels: 54%⟩
against the drawn labels); after RL, gold / proxy / KL over the last 10% of updates:
⟨rlhf.after_rl: β = 0: 0.91 / 14.9 / 121; β = 0.02: 0.85 / 15.3 / 99; β = 0.1: 0.73 / 14.2 / 68⟩
(gold of π_ref's samples: ⟨rlhf.ref_gold: 0.03⟩).
"""

import ml_collections

from pg.run.configs import base_config


def get_config():
  c = base_config()
  c.model = ml_collections.ConfigDict({"name": "llama", "num_layers": 2, "d_model": 128,
                                       "num_heads": 4, "num_kv_heads": 2, "mlp_dim": 344,
                                       "value_head": "none", "dtype": "float32"})
  c.rlhf = ml_collections.ConfigDict({
      "pi_ref": "",           # "" = pretrain π_ref here; else a checkpoint (dir or .gguf)
      "prompts": "corpus",    # "corpus" windows, or "chat" prompts through the chat template
      "vocab_size": 1024, "prompt_len": 8, "response_len": 16,
      "pretrain_steps": 800, "pretrain_batch": 64, "pretrain_lr": 3e-3,
      "num_pairs": 2048, "bt_temperature": 0.1, "heldout_fraction": 0.2,
      "reward_steps": 400, "reward_batch": 64, "reward_lr": 1e-3,
  })
  # RL: every field of the base config, task and init_from set by the pipeline.
  c.num_seeds = 4
  c.num_prompts = 16
  c.group_size = 4
  c.advantage = "rloo"
  c.kl_placement = "reward"
  c.kl_estimator = "k1"
  c.hparams.learning_rate = 1e-3
  c.updates_per_chunk = 10
  c.num_chunks = 20
  c.sweep.kl_coef = (0.0, 0.02, 0.1)
  return c
