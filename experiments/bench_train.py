"""Throughput of the whole compiled update (sample → score → advantages → loss → update).

    python experiments/bench_train.py [--config configs/default.py] [--seeds 1 8 32]
    python experiments/bench_train.py --sweep     # 4 learning rates × 8 seeds: one program
                                                  # against the same 32 runs one by one
    python experiments/bench_train.py --reference # the PyTorch reference problem (issue 20):
                                                  # configs/bench_smollm2_reference.py, f32 and bf16

About 1 minute on a 2-core CPU with the default config (--sweep: about 2 minutes). For each
number of vmapped seeds it prints: seconds per update, generated tokens per second (response
tokens actually produced, over all seeds), model FLOP/s (`pg.train.flops`) and its share of a
float32 matmul peak measured in the same run, compile time, XLA's temporary memory for the chunk
program, and the process's peak resident memory so far. `--sweep` prints, for the grid in one
compiled program and for its runs done one after another, compile time, seconds per update of
the whole grid and run-updates per second (`pg.bench.train`).
"""

import argparse
import os

from pg.bench import train as bench
from pg.run.configs import load_config_file as load_config


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..",
                                                       "configs", "default.py"))
  parser.add_argument("--seeds", type=int, nargs="+", default=[1, 8, 32])
  parser.add_argument("--repeats", type=int, default=3, help="timed chunks per row")
  parser.add_argument("--sweep", action="store_true",
                      help="time a learning-rate × seeds grid in one program vs one by one")
  parser.add_argument("--learning-rates", type=float, nargs="+",
                      default=[3e-4, 1e-3, 3e-3, 1e-2])
  parser.add_argument("--sweep-seeds", type=int, default=8)
  parser.add_argument("--grad-accum-steps", type=int, default=None,
                      help="override the config's micro-batches per minibatch (memory for "
                           "many seeds on one device)")
  parser.add_argument("--peak-size", type=int, default=None,
                      help="side of the square matmul that measures the peak (default: 2048 "
                           "on CPU, 8192 on an accelerator)")
  parser.add_argument("--reference", action="store_true",
                      help="the PyTorch reference problem (configs/bench_smollm2_reference.py): "
                           "float32, bfloat16 and a bfloat16 sampler, against the reference")
  parser.add_argument("--rows", nargs="+", default=None,
                      help="--reference: only these rows (float32, bfloat16, 'float32, "
                           "bfloat16 sampler')")
  parser.add_argument("--breakdown", action="store_true",
                      help="--reference: also time the update's parts alone")
  parser.add_argument("--early-stop", default=None, metavar="CONFIG",
                      help="--reference: also time the sampler with and without stopping when "
                           "every row has ended, on CONFIG's task (e.g. configs/smollm2_rlvr.py)")
  parser.add_argument("--early-stop-tokens", type=int, default=64,
                      help="--early-stop: max_new_tokens of that task")
  parser.add_argument("--early-stop-greedy", action="store_true",
                      help="--early-stop: greedy decoding instead of sampling")
  parser.add_argument("--accelerator", nargs="*", default=None, metavar="MODEL",
                      help="--reference on a GPU: per model (smollm2, qwen0.5b; default both) "
                           "and dtype, the training phase's FLOP/s against the bf16 and "
                           "float32/TF32 peaks and the sampler's bytes per step against the "
                           "memory bandwidth, all measured in the run")
  parser.add_argument("--report", default=os.path.join(os.path.dirname(__file__), "..",
                                                       "reports", "bench_smollm2_reference", "summary.md"),
                      help="--reference: markdown report to write ('' writes none)")
  args = parser.parse_args()
  if args.reference:
    return reference(args)
  config = load_config(args.config)
  if args.grad_accum_steps is not None:
    config = bench.changed(config, grad_accum_steps=args.grad_accum_steps)
  print(bench.header(config, os.path.basename(args.config)))
  if args.sweep:
    bench.report_sweep(config, args.learning_rates, args.sweep_seeds, args.repeats)
  else:
    bench.report_throughput(config, args.seeds, args.repeats, args.peak_size)


def reference(args):
  import shlex
  import sys
  from pg.bench import reference as ref
  path = args.config if "--config" in sys.argv else os.path.join(
      os.path.dirname(__file__), "..", "configs", "bench_smollm2_reference.py")
  early = None
  if args.early_stop:
    early = bench.changed(load_config(args.early_stop),
                          **{"task.options.max_new_tokens": args.early_stop_tokens})
  ref.report(load_config(path), repeats=args.repeats, peak_size=args.peak_size or 0,
             rows_which=None if args.rows is None else tuple(args.rows),
             breakdown_parts=args.breakdown, early_stop_config=early,
             early_stop_name=os.path.basename(args.early_stop or ""),
             early_stop_greedy=args.early_stop_greedy, accelerator=args.accelerator,
             report_path=args.report,
             command=shlex.join(["python", "experiments/bench_train.py", *sys.argv[1:]]))


if __name__ == "__main__":
  main()
