"""How an update's time grows with response length, model width and seeds; memory at V = 32k.

    python experiments/bench_scaling.py            # all tables, ~10 minutes on a 2-core CPU
    python experiments/bench_scaling.py --quick    # the smaller half of each table, ~2 minutes

Starts from configs/bench_reference.py (width 128, 64 prompts × 4 samples, 24 tokens) and
changes one thing per table. Each row: seconds per update for the whole compiled update, the
sampler alone (same batch, jitted) and the rest (scoring, advantages, loss, optimizer), so the
part that grows fastest is visible. A row whose update would not fit in 80% of the memory
(RAM on a CPU) runs in micro-batches (`grad_accum_steps`, doubled until it fits), and the row
says how many. The memory table compiles (without running) one update at
vocabulary 32768 and 1024-token responses, with the LM head and log-probs dense or chunked
over the vocabulary, and reads XLA's temporary-buffer size (`pg.bench.scaling`).
"""

import argparse
import os

import jax

from pg.bench import scaling
from pg.run.configs import load_config_file

REFERENCE = os.path.join(os.path.dirname(__file__), "..", "configs", "bench_reference.py")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--repeats", type=int, default=1)
  args = parser.parse_args()
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPU cores, "
        f"load average {os.getloadavg()[0]:.2f}")
  scaling.report(load_config_file(REFERENCE), args.quick, args.repeats)


if __name__ == "__main__":
  main()
