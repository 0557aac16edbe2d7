"""Sweeps: every setting × every seed, continuous values in one compiled program.

A config's `sweep` block names the values to try; everything else is the base config.

    config.sweep.learning_rate = (1e-4, 3e-4, 1e-3)   # a hyperparameter (pg.hparams.SPEC)
    config.sweep.advantage = ("rloo", "grpo")         # a choice that changes the program
    config.sweep.model.d_model = (64, 128)

Hyperparameters are traced leaves of the train state (`pg.hparams`), so their grid and the seeds
form one vmapped run axis: settings × seeds runs in *one* compile. Choices that change the
program (`STRUCTURAL`: names, sizes, counts) form groups, compiled one after another. A run is
one seed of one setting; run (setting, seed j) uses the same PRNG key as seed j of
`experiments/train.py` with that setting, so both give the same numbers.

Memory: a group's runs go into one program if XLA's memory analysis of it fits
`sweep.memory_budget_mib` (0: 80% of what the device has free); otherwise they are split into
equal batches that do, and the split is reported. `sweep.runs_per_batch` caps a batch by hand.

Workdir: `groups/<group>/batch_<hash>/` holds each batch (an `experiment.run` workdir: config,
metrics, checkpoints; interrupted batches resume), and at the top `results.jsonl` (every run's
metrics with its settings), `results.md` / `results.csv` (final, best and area under the curve
per setting, 95% intervals across seeds) and figures. A rerun skips the runs already finished.
"""

from pg.run.sweep.grid import (Group, check_not_a_sweep, continuous_names, groups, make_runs,
                               run_labels, settings, swept)
from pg.run.sweep.memory import (MEMORY_FRACTION, batch_sizes, compile_programs,
                                 memory_budget_bytes, program_bytes)
from pg.run.sweep.results import Setting, summarize, write_results
from pg.run.sweep.runner import collect, finished_labels, run
