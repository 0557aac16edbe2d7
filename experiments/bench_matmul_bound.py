"""How fast one update could be if only its matmuls took time: each timed alone, at its shape.

    python experiments/bench_matmul_bound.py [--config configs/bench_reference.py]

About 20 seconds on a 2-core CPU. The trainer's dense layers (QKV, attention output, MLP in and
out, every layer, and the LM head) over the rows it trains on: forward, input gradient and
weight gradient separately; and the sampler's decode steps, T matmuls of B rows each. Each
product is jitted and timed alone (best of 30) on this device. The sum is a lower bound on the
update's time: attention, norms, softmaxes, sampling itself and the optimizer count as free.
Compare it with bench_train's seconds per update to see what share goes to the rest
(`pg.bench.matmul`).
"""

import argparse
import os

import jax

from pg.bench import matmul
from pg.run.configs import load_config_file


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..",
                                                       "configs", "bench_reference.py"))
  args = parser.parse_args()
  config = load_config_file(args.config)
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPU cores\n")
  matmul.report(config)


if __name__ == "__main__":
  main()
