"""Regenerates every number of the README and the config docstrings from fresh runs.

    python experiments/reproduce.py                    # every group (total: reports/results.md)
    python experiments/reproduce.py --only ppo,rlhf    # some groups; the others' entries stay
    python experiments/reproduce.py --only bench       # this machine's throughput (on demand)
    python experiments/reproduce.py --smoke            # every group shrunk, into a temp folder

Runs each group (a config's runs with its stated seeds, the RLHF pipeline, the estimator demo
and lab) in a fresh folder under runs/reproduce/, writes reports/results.json and
reports/results.md (command, seeds, wall time, the first and last 10% of updates with 95%
t-intervals, per-seed values), then rewrites the marked numbers in README.md and configs/*.py
and the committed estimator-lab report. `--smoke` (two chunks of two updates, two seeds) and
`--no-rewrite` touch no tracked file but results.* (`--smoke`: not even those). See
pg/reproduce/.
"""

import argparse

from pg.reproduce import groups, report


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", default="",
                      help=f"comma-separated groups of {', '.join(groups.BY_NAME)} (default: "
                           f"all but bench)")
  parser.add_argument("--smoke", action="store_true",
                      help="shrunk runs (2 chunks of 2 updates, 2 seeds) into a temporary "
                           "folder; nothing tracked is written")
  parser.add_argument("--no-rewrite", action="store_true",
                      help="write reports/results.* but leave README.md, configs/ and "
                           "reports/estimator_lab/ alone")
  parser.add_argument("--out", default=None,
                      help="folder for results.json and results.md (default: reports/, or a "
                           "temporary folder with --smoke)")
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  report.reproduce(args.only, smoke=args.smoke, rewrite=not args.no_rewrite, out=args.out)


if __name__ == "__main__":
  main()
