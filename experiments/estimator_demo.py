"""A demo of the score-function estimators on an enumerable problem: each registered baseline trains a tabular policy, every seed in one compile, and the
sampled gradients are compared with the exact ∇J.

    python experiments/estimator_demo.py [--config.num_updates=500]
"""

import _startup  # noqa: F401  (first: Ctrl-C during the imports exits cleanly)

import os

from absl import logging

from pg.lab import demo
from pg.run import cli, configs, plotting, schema

DEFAULT = os.path.join(os.path.dirname(__file__), "..", "configs", "enumerable_demo.py")
_CONFIG = cli.config_flag(DEFAULT)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  schema.check_against(config, configs.load_config_file(DEFAULT))
  results = demo.run_every_estimator(config, log=lambda name, seconds: print(
      f"{name:>16}: {config.num_seeds} seeds × {config.num_updates} updates in {seconds:.1f}s "
      f"(compile included)"))
  print(plotting.summary_table(
      results,
      [("J at 10% of updates", "exact_J", (0.1, 0.1)), ("final J", "exact_J", (0.9, 1.0)),
       ("cos(ĝ, ∇J), first 10%", "grad_cosine_to_exact", (0.0, 0.1))],
      note=f"max achievable J = {demo.max_objective(config):.3f}; ± is a 95% interval across "
           f"{config.num_seeds} seeds; cos is the sampled gradient's cosine with the exact one."))
  os.makedirs(config.workdir, exist_ok=True)
  path = plotting.plot_curves(results, os.path.join(config.workdir, "curves.png"),
                              best=demo.max_objective(config),
                              smoothing={"grad_cosine_to_exact": 10})
  print(f"learning curves: {path}")


if __name__ == "__main__":
  cli.run(main)
