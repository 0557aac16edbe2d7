"""The train step (layer 2): build once, compile the whole update, vmap over runs.

    task, policy = build(config)
    init, train_chunk = make_programs(config, task, policy)   # jitted, vmapped over runs
"""

from pg.train.build import ON_NONFINITE, KL_PLACEMENTS, aggregation, build, shares_prompts
from pg.train.params_io import load_params, save_params, shape_mismatch
from pg.train.programs import (Runs, compiler_options, hparams_from_config, make_programs,
                               seed_keys, seed_labels, seed_runs)
from pg.train.step import TrainState, lora_base, make_train
