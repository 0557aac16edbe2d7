"""The base experiment config; files in configs/ start from it and change what they need."""

import importlib.util
import os

import ml_collections

from ml_collections.config_dict import placeholder

from pg.core import hparams, registry
from pg.policy import POLICIES

# Config fields a sweep may vary by compiling again (dotted paths are nested).
STRUCTURAL = ("advantage", "policy_loss", "aggregation", "whiten_advantages", "kl_placement",
              "kl_estimator", "group_size", "num_prompts", "ppo_epochs", "num_minibatches",
              "model.num_layers", "model.d_model", "model.num_heads", "model.value_head",
              "model.dtype", "rollout_correction", "staleness", "sampler_dtype")


def base_config(imports=()):
  """The base config. `imports` (module names or .py paths, kept in `config.imports`) are
  imported first, so the hyperparameters their losses and estimators declare get fields in
  `config.hparams` and `config.sweep` like the built-in ones."""
  registry.import_modules(imports)
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = 4
  c.imports = tuple(imports)  # modules (or .py paths) imported for their registrations
  c.task = ml_collections.ConfigDict({"name": "count_up", "options": {}})
  # The architecture (pg.policy.POLICIES) and its options, with the registration's defaults.
  c.model = ml_collections.ConfigDict({"name": "gpt", **POLICIES["gpt"].options})
  c.num_prompts = 16          # prompts per update
  c.group_size = 4            # samples per prompt (G), in consecutive rows
  c.advantage = "rloo"        # pg.ADVANTAGE_ESTIMATORS
  c.policy_loss = "reinforce"  # pg.POLICY_LOSSES
  c.aggregation = placeholder(str)  # pg.AGGREGATION_MODES; None: the loss's own, or token-mean
  c.whiten_advantages = False
  c.kl_placement = "none"     # "none" | "reward" (−β·kl per token) | "loss" (β·kl term)
  c.kl_estimator = "k1"       # k1/k3 in the reward, k2 in the loss (see pg.kl)
  c.ppo_epochs = 1
  c.num_minibatches = 1
  c.grad_accum_steps = 1      # micro-batches per minibatch, gradients averaged (memory)
  c.share_prompts = True      # run a group's prompt once for its G samples (same numbers)
  c.max_grad_norm = 1.0
  # Sampler–trainer mismatch (pg.core.rollout_correction): the sampler's compute dtype ("": the
  # model's), samples drawn with the params of `staleness` updates ago (a ring buffer of past
  # params in the state), and the correction ("none": PPO's ratio is against the sampler's
  # log-probs; otherwise old log-probs are recomputed by the trainer and the policy loss is
  # weighted per token by pg.core.rollout_correction.MODES) and the off-policy sequence mask.
  c.sampler_dtype = ""
  c.staleness = 0
  c.rollout_correction = "none"
  c.off_policy_mask = False
  # Batch shaping (pg.core.shaping, DAPO): draw oversample × num_prompts groups and keep
  # num_prompts whose scores differ (1: off); a soft length penalty over the last
  # overlong_buffer tokens before max_new_tokens (0: off); truncated responses out of the loss.
  c.oversample = 1
  c.overlong_buffer = 0
  c.mask_truncated = False
  c.on_nonfinite = "stop"     # NaN/inf reward, loss or gradient: "stop" (save, name it) | "skip"
  c.max_skipped_fraction = 0.1  # "skip": a run skipping more of its updates stops (exit != 0)
  c.logprob_chunk_size = ml_collections.config_dict.placeholder(int)
  c.updates_per_chunk = 10    # updates per compiled chunk (one lax.scan)
  c.num_chunks = 20
  c.checkpoint_every = 5      # chunks
  c.workdir = ""              # default: runs/<config name>
  # device mesh (pg.train.sharding): seed and data 0 = choose; fsdp > 1 splits each run's params
  c.mesh = ml_collections.ConfigDict({"seed": 0, "data": 0, "fsdp": 1})
  # LoRA (pg.policy.lora): rank > 0 trains adapters on the projections whose parameter paths
  # match `targets` (a regex), scaled by alpha / rank; the base stays frozen, one copy for all runs
  c.lora = ml_collections.ConfigDict({"rank": 0, "alpha": 16.0, "targets": r"(layer|block)_\d+/"})
  c.distributed = False       # call jax.distributed.initialize() (multi-host)
  c.init_from = ""            # params file (pg.train.save_params) for the policy and π_ref
  # Held-out evaluation (a task with a held-out set): at update 0, every eval_every updates (a
  # multiple of updates_per_chunk; 0: none) and at the end. pg.run.evaluation.
  c.eval_every = 0
  c.eval_samples = 4          # sampled responses per problem (pass@k, maj@n), besides greedy
  c.eval_temperature = 1.0
  c.eval_batch = 32           # held-out problems per compiled call
  c.eval_size = 0             # problems evaluated; 0: the whole held-out set
  spec = hparams.spec()  # pg.hparams.SPEC and what the registered losses and estimators declare
  c.hparams = ml_collections.ConfigDict({name: entry[0] for name, entry in spec.items()})
  # Values to sweep (experiments/sweep.py, pg.run.sweep): a tuple per hyperparameter or
  # structural choice; None: not swept. runs_per_batch / memory_budget_mib: 0 = automatic.
  sweep = {name: placeholder(tuple) for name in spec}
  sweep.update({name: placeholder(tuple) for name in STRUCTURAL if "." not in name})
  sweep["model"] = ml_collections.ConfigDict(
      {name.split(".")[1]: placeholder(tuple) for name in STRUCTURAL if name.startswith("model.")})
  c.sweep = ml_collections.ConfigDict({**sweep, "runs_per_batch": 0, "memory_budget_mib": 0.0})
  c.hparams.learning_rate = 3e-3
  return c


def load_config_file(path):
  """`get_config()` of the config file at `path` (as the scripts' --config reads it)."""
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f"pg_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
