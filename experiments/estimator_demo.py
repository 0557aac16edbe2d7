"""A demo of the score-function estimators on an enumerable problem: each registered baseline trains a tabular policy, every seed in one compile, and the
sampled gradients are compared with the exact ∇J.

    python experiments/estimator_demo.py [--config.num_updates=500]
"""

import _startup  # noqa: F401  (first: Ctrl-C during the imports exits cleanly)

import os
import time

from absl import logging

import pg
from pg.lab import demo
from pg.run import cli, configs, plotting, schema

DEFAULT = os.path.join(os.path.dirname(__file__), "..", "configs", "enumerable_demo.py")
_CONFIG = cli.config_flag(DEFAULT)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  schema.check_against(config, configs.load_config_file(DEFAULT))
  hp = pg.make_hparams(learning_rate=config.learning_rate, temperature=config.temperature,
                       baseline_decay=config.baseline_decay)
  results = {}
  for name in config.advantages:
    with config.unlocked():
      config.advantage = name
    demo.validate(config)
  for name in config.advantages:
    with config.unlocked():
      config.advantage = name
    start = time.time()
    results[name] = {k: v.__array__() for k, v in demo.run(config, hp).items()}
    print(f"{name:>16}: {config.num_seeds} seeds × {config.num_updates} updates "
          f"in {time.time() - start:.1f}s (compile included)")
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
