"""One RL update of SmolLM2-135M on this machine, in float32 and bfloat16: speed and memory.

    python experiments/bench_llm.py                                   # configs/bench_smollm2.py
    python experiments/bench_llm.py --config.num_prompts=8 --repeats=5
    python experiments/bench_llm.py --dtypes=float32 --report=''

About 5 minutes on a 2-core CPU with the default config. Per model and compute dtype it
prints seconds per update, generated tokens per second, the sampler's share of the update (the
sampler alone, jitted with the same sizes, against the whole update), model FLOP/s and their
share of a float32 matmul peak measured in the same run, load and compile times, XLA's temporary
memory for the update's program and the process's peak resident memory (`pg.bench.llm`); on a
GPU also a Qwen2.5-0.5B-shaped model with random weights (--random_model). The table goes to
stdout and, as markdown with the machine and the command, to --report
(default reports/bench_llm.md).
"""

import _startup  # noqa: F401  (first: Ctrl-C during the imports exits cleanly)

import os
import shlex
import sys
import time

from absl import flags, logging

from pg.bench import llm
from pg.run import cli, schema

ROOT = os.path.relpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
_CONFIG = cli.config_flag(os.path.normpath(os.path.join(ROOT, "configs", "bench_smollm2.py")))
_DTYPES = flags.DEFINE_multi_enum("dtypes", list(llm.DTYPES), llm.DTYPES,
                                  "Compute dtypes, one row each (parameters stay float32).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed updates (and sampler calls) per row.",
                                lower_bound=1)
_PEAK_SIZE = flags.DEFINE_integer("peak_size", 0, "Side of the square matmul that measures the "
                                  "float32 peak (0: 2048 on a CPU, 8192 on an accelerator).",
                                  lower_bound=0)
_RANDOM = flags.DEFINE_enum("random_model", "gpu", llm.RANDOM_MODEL_WHEN,
                            "When to add the Qwen2.5-0.5B-shaped model with random weights.")
_REPORT = flags.DEFINE_string("report", os.path.normpath(os.path.join(ROOT, "reports",
                                                                        "bench_llm.md")),
                              "Markdown report to write ('' writes none).")


def command() -> str:
  """This run's command line, as typed from the repository root."""
  script = os.path.relpath(os.path.abspath(sys.argv[0]), os.path.abspath(ROOT))
  return shlex.join(["python", script, *sys.argv[1:]])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  start = time.perf_counter()
  config = _CONFIG.value
  schema.check(config)
  llm.check(config, tuple(_DTYPES.value))
  head = llm.header(config)
  print(head, flush=True)
  peak, peak_line = llm.float32_peak(_PEAK_SIZE.value)
  print(peak_line + "\n", flush=True)
  rows = llm.run(config, tuple(_DTYPES.value), repeats=_REPEATS.value, peak=peak,
                 random=llm.random_models(_RANDOM.value),
                 on_row=lambda r: print(f"measured {r['model']} {r['dtype']}: "
                                        f"{r['s/update']:.3g} s/update", flush=True))
  wall = time.perf_counter() - start
  print(f"\n{llm.table(rows)}\n\nwall time {wall:.0f} s", flush=True)
  if _REPORT.value:
    report = llm.markdown_report(rows, head, peak_line, command(), wall, _REPEATS.value)
    os.makedirs(os.path.dirname(os.path.abspath(_REPORT.value)), exist_ok=True)
    with open(_REPORT.value, "w", encoding="utf-8") as f:
      f.write(report)
    print(f"wrote {_REPORT.value}")


if __name__ == "__main__":
  cli.run(main)
