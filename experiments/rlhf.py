"""The RLHF pipeline end to end (or chosen stages): pretrain → preferences → reward → rl → report.

    python experiments/rlhf.py                                    # configs/rlhf.py, every stage
    python experiments/rlhf.py --stages=reward,rl,report          # reuse the earlier stages' files

Each stage reads what the earlier ones wrote into the workdir (default runs/rlhf): pi_ref/ (a
Hugging Face model directory with its BPE tokenizer; none when config.rlhf.pi_ref names your
own), preferences.npz, reward_model.msgpack, rl/ (a β sweep). The end: summary.md (stage, metric,
value; gold and proxy per β with Welch tests; samples before and after RL) and
gold_vs_proxy.png. See pg/rlhf/. configs/rlhf_smollm2.py runs it on SmolLM2-135M-Instruct.
"""

import _startup  # noqa: F401  (first: Ctrl-C during the imports exits cleanly)

import os

from absl import flags, logging

from pg import rlhf
from pg.run import cli

_CONFIG = cli.config_flag(os.path.join(os.path.dirname(__file__), "..", "configs", "rlhf.py"),
                          "An ml_collections config file with an `rlhf` block.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/rlhf", "Output folder.")
_STAGES = flags.DEFINE_list("stages", list(rlhf.STAGES), f"Stages to run, of {rlhf.STAGES}.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  summary = rlhf.run(_CONFIG.value, _WORKDIR.value, stages=_STAGES.value)
  print(open(os.path.join(_WORKDIR.value, "summary.md")).read())
  print(f"figure: {os.path.join(_WORKDIR.value, 'gold_vs_proxy.png')}")
  del summary


if __name__ == "__main__":
  cli.run(main)
