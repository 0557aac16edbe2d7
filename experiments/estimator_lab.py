"""The estimator lab: the source text's claims about the score-function estimator, measured.

    python experiments/estimator_lab.py [--workdir runs/estimator_lab] [--update-report]
        [--groups 1000 4000 16000 64000] [--seed 0] [--seeds 16] [--sweep-workdir DIR]

About 150 s on a 2-core CPU. Writes report.md (tables with standard errors, conclusions
generated from the numbers) and bias_vs_samples.png into the workdir; `--update-report` then
copies both over the committed reports/estimator_lab/. The claims, their measurements and the
report are pg/lab/claims.py, findings.py and report.py.
"""

import time

_START = time.time()  # the runtime in the report counts the imports too

import argparse  # noqa: E402
import os  # noqa: E402

from pg.lab import report  # noqa: E402

REPORT_DIR = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reports", "estimator_lab"))


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=os.path.join("runs", "estimator_lab"),
                      help="where report.md and bias_vs_samples.png go")
  parser.add_argument("--update-report", action="store_true",
                      help=f"also copy them over the committed report in {REPORT_DIR}")
  parser.add_argument("--groups", type=int, nargs="+", default=list(report.DEFAULT_SIZES),
                      help="numbers N of group estimates for claims 1 and 2 (claims 3 and 4 "
                           "use max N / 4 groups)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--seeds", type=int, default=16, help="training seeds per cell (claim 5)")
  parser.add_argument("--sweep-workdir", default=None,
                      help="keep claim 5's sweep under DIR/<hash of its config> and reuse runs "
                           "of an identical config (default: a fresh temporary folder)")
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  path = report.write(args.workdir, args.seed, args.groups, args.seeds, args.sweep_workdir,
                      started=_START)
  print(f"report: {path}")
  if args.update_report:
    print("updated: " + ", ".join(report.publish(args.workdir, REPORT_DIR)))


if __name__ == "__main__":
  main()
