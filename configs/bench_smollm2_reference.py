"""The PyTorch reference problem of issue 20, run by pg: RLOO on a SmolLM2-135M-shaped Llama with
random weights, float32, on the 2-core CPU.

    python experiments/bench_train.py --reference --breakdown --early-stop configs/smollm2_rlvr.py
    python experiments/train.py --config configs/bench_smollm2_reference.py \
      --config.model.init_from=$(python -c "from pg.policy.hf import smollm2; print(smollm2.config_path())") \
      --config.updates_per_chunk=10 --config.num_chunks=4 --config.checkpoint_every=4  # the curve

The benchmark: about 9 minutes on a 2-core CPU (three rows and the parts timed alone; 10 min
15 s with the early-stop check; reports/bench_smollm2_reference/summary.md): 11.0 s per update
in float32 (10.3 s in an earlier run), 2.52× the PyTorch loop's 27.6 s. The learning curve from SmolLM2-135M-Instruct's weights: 8 min 9 s for
40 updates (mean score 0.009 → 0.112, 1 seed). The problem, as the reference PyTorch +
transformers loop runs it: 30 layers, width 576, 9 query / 3 key-value heads, MLP 1536,
vocabulary 49,152, tied embeddings, random weights; 8 prompts × 4 samples, random 32-token prompts, 32 generated tokens (no end token),
temperature 1; reward = the share of generated tokens equal to a fixed id (28, a token
SmolLM2's own weights emit about 2% of the time, so the learning curve from them starts above
0; from random weights every id has probability about 2·10⁻⁵, and the timing does not depend
on it); leave-one-out baseline; one AdamW step per update.
"""

import ml_collections

from pg.run.configs import base_config

SMOLLM2_135M_SHAPE = {"name": "llama", "num_layers": 30, "d_model": 576, "num_heads": 9,
                      "num_kv_heads": 3, "mlp_dim": 1536, "tie_embeddings": True,
                      "rope_theta": 100000.0, "rms_eps": 1e-5, "dtype": "float32"}


def get_config():
  c = base_config()
  c.task.name = "target_token"
  c.task.options = {"vocab_size": 49152, "prompt_len": 32, "length": 32, "target": 28}
  c.model = ml_collections.ConfigDict(SMOLLM2_135M_SHAPE)
  c.num_seeds = 1
  c.num_prompts = 8
  c.group_size = 4
  c.advantage = "rloo"
  c.hparams.learning_rate = 1e-5
  c.updates_per_chunk = 1
  return c
