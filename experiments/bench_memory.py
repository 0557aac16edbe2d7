"""Memory of the compiled update: full fine-tune vs LoRA, 1 vs 8 runs, and FSDP at 7B.

    python experiments/bench_memory.py                      # configs/bench_memory.py
    python experiments/bench_memory.py --runs=1,4 --rank=8 --report=''

Each row (full fine-tune or LoRA of rank --rank, with R runs of --runs in one program) compiles
and, where XLA's planned peak fits the free memory, runs one update in a fresh process, so every
peak resident memory is that row's own (`pg.bench.memory`). Then the per-device bytes of a
Qwen2.5-7B-shaped model's train state, whole and with FSDP over --devices, from shapes alone.
The tables go to stdout and, as markdown with the machine and the command, to --report
(default reports/bench_memory.md).
"""

import _startup  # noqa: F401  (first: Ctrl-C during the imports exits cleanly)

import json
import os
import shlex
import subprocess
import sys
import time

from absl import flags, logging

from pg.bench import llm, memory
from pg.run import cli, schema

ROOT = os.path.relpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
_CONFIG = cli.config_flag(os.path.normpath(os.path.join(ROOT, "configs", "bench_memory.py")))
_RUNS = flags.DEFINE_list("runs", ["1", "8"], "Runs in one program, per row.")
_RANK = flags.DEFINE_integer("rank", 16, "LoRA rank of the LoRA rows.")
_DEVICES = flags.DEFINE_integer("devices", 8, "FSDP axis of the 7B table.")
_ROW = flags.DEFINE_string("row", "", "Internal: measure one row ('full:R' or 'lora:R').")
_REPORT = flags.DEFINE_string("report", os.path.normpath(os.path.join(ROOT, "reports",
                                                                        "bench_memory.md")),
                              "Markdown report to write ('' writes none).")


def command() -> str:
  script = os.path.relpath(os.path.abspath(sys.argv[0]), os.path.abspath(ROOT))
  return shlex.join(["python", script, *sys.argv[1:]])


def one_row(config, spec):
  mode, runs = spec.split(":")
  config.lora.rank = _RANK.value if mode == "lora" else 0
  row = memory.measure(config, int(runs))
  print("ROW " + json.dumps(row), flush=True)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  schema.check(config)
  if _ROW.value:
    return one_row(config, _ROW.value)
  start = time.perf_counter()
  overrides = [a for a in sys.argv[1:] if a.startswith("--config")]
  rows = []
  specs = [f"{mode}:{r}" for r in _RUNS.value for mode in ("full", "lora")]
  for spec in specs:
    out = subprocess.run([sys.executable, os.path.abspath(sys.argv[0]), f"--row={spec}",
                          f"--rank={_RANK.value}", *overrides], capture_output=True, text=True)
    found = [line[4:] for line in out.stdout.splitlines() if line.startswith("ROW ")]
    if out.returncode or not found:
      tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
      rows.append({"mode": spec, "note": f"failed: {tail[0][:200]}"})
    else:
      rows.append(json.loads(found[0]))
    print(f"measured {spec}: {rows[-1]}", flush=True)
  table = memory.markdown(rows)
  big = memory.abstract_table(*memory.QWEN2_5_7B, devices=_DEVICES.value, rank=_RANK.value)
  big_table = memory.markdown(big, memory.ABSTRACT_COLUMNS)
  wall = time.perf_counter() - start
  print(f"\n{table}\n\nQwen2.5-7B-shaped ({big[0]['parameters B']:.2f} B parameters), float32 "
        f"state per device:\n\n{big_table}\n\nwall time {wall:.0f} s", flush=True)
  if _REPORT.value:
    text = (f"# Memory of one update\n\n`{command()}` on {llm.cpu_name()}, "
            f"{os.cpu_count()} cores; wall time {wall:.0f} s.\n\n"
            f"SmolLM2-135M-Instruct (float32, KL penalty in the loss):\n\n{table}\n\n"
            f"state GB: the train state the program takes (params or adapters, Adam's moments, "
            f"π_ref, over all runs); base GB: LoRA's one frozen base; XLA temp / peak: XLA's "
            f"memory analysis of the compiled chunk (peak = arguments + outputs not aliased + "
            f"temporaries); peak RSS: the process's peak resident memory after one update.\n\n"
            f"Qwen2.5-7B-shaped ({big[0]['parameters B']:.2f} B parameters), float32 train "
            f"state per device, from shapes and the partition rules alone:\n\n{big_table}\n")
    os.makedirs(os.path.dirname(os.path.abspath(_REPORT.value)), exist_ok=True)
    with open(_REPORT.value, "w", encoding="utf-8") as f:
      f.write(text)
    print(f"wrote {_REPORT.value}")


if __name__ == "__main__":
  cli.run(main)
