"""Benchmarks of `pg`'s two hot paths: GAE (scan / associative scan / NumPy) and token log-probs.

    python experiments/bench_core.py            # full run, ~70 s on a 2-core CPU (peak RSS ~3 GiB)
    python experiments/bench_core.py --quick    # smaller sizes, ~10 s

Prints markdown tables (paste them into a note):

1. GAE at B=256, T in {128, 1024, 4096}: `pg.generalized_advantage_estimation` (`lax.scan`),
   `pg.generalized_advantage_estimation_associative` and a NumPy reverse loop over t (vectorised
   over B). Random rewards and values, a contiguous generated prefix of random length per row.
   The three are checked to agree (rtol 1e-4) before anything is timed.
2. `pg.token_log_probs_and_entropy`, dense vs chunked over the vocabulary, logits in bfloat16 and
   float32, forward only and forward+backward (grad of Σ logp + 0.01·Σ H w.r.t. the logits):
   median time and the compiled program's memory (`Compiled.memory_analysis()`).

Times are medians over `--repeats` (GAE) / `--lp-repeats` (log-probs) calls after one warm-up
call, each ended by `block_until_ready`; compile time (lower + compile) is reported separately
(`pg.bench.core`).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root
from pg.bench import core  # noqa: E402


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--quick", action="store_true",
                 help="T in {128, 1024} for GAE and a small log-prob shape (< 1 minute).")
  p.add_argument("--repeats", type=int, default=None,
                 help="timed calls per GAE configuration (default 20, 5 with --quick).")
  p.add_argument("--lp-repeats", type=int, default=None,
                 help="timed calls per log-prob configuration (default 5, 2 with --quick).")
  p.add_argument("--gae-B", type=int, default=256)
  p.add_argument("--B", type=int, default=None, help="log-prob batch (default 8, 2 with --quick).")
  p.add_argument("--T", type=int, default=None,
                 help="log-prob sequence length (default 512, 128 with --quick).")
  p.add_argument("--V", type=int, default=32768, help="vocabulary size.")
  p.add_argument("--chunks", type=int, nargs="+", default=[4096, 8192],
                 help="vocabulary chunk sizes to compare with dense.")
  p.add_argument("--skip-gae", action="store_true")
  p.add_argument("--skip-logprobs", action="store_true")
  args = p.parse_args(argv)
  quick = args.quick
  if args.repeats is None:
    args.repeats = 5 if quick else 20
  if args.lp_repeats is None:
    args.lp_repeats = 2 if quick else 5
  if args.B is None:
    args.B = 2 if quick else 8
  if args.T is None:
    args.T = 128 if quick else 512
  args.gae_Ts = [128, 1024] if quick else [128, 1024, 4096]
  return args


def main(argv=None):
  core.report(**vars(parse_args(argv)))


if __name__ == "__main__":
  main()
