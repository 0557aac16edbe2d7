"""Build once: a config's task and policy, every static choice checked, before anything compiles.

    task, policy = build(config)            # or build(config, task=my_task)

A program (a run, a sweep group, a pipeline stage) calls `build` once and hands the two objects
down to `make_train` / `make_programs` / `pg.run.experiment.run`; nothing below re-validates.
The checks read the registrations' facts (an estimator's critic and group needs, a loss's
aggregation and hyperparameters), not lists of names.
"""

from __future__ import annotations

import os

import pg
from pg import tasks as tasks_lib
from pg.core.kl import KL_ESTIMATORS
from pg.core.registry import import_modules
from pg.policy import abstract_params, build_policy, lora
from pg.policy.base import with_lora

KL_PLACEMENTS = ("none", "reward", "loss")
# A NaN or infinite reward, loss or gradient: "stop" (save the last good state and stop, naming
# the step, run and quantity) or "skip" (drop that update, count it in the `skipped` metric).
ON_NONFINITE = ("stop", "skip")
POSITIVE_INTS = ("num_seeds", "num_prompts", "group_size", "updates_per_chunk", "num_chunks",
                 "ppo_epochs", "num_minibatches", "grad_accum_steps", "checkpoint_every")


def build(config, task: tasks_lib.Task | None = None):
  """(task, policy) for `config`, validated, with the field named in every refusal.

  `task` (a `pg.tasks.Task`) replaces `config.task` (a pipeline's own task: a learned reward
  model, say). `config.imports` are imported first, for their registrations."""
  import_modules(config.get("imports", ()))
  for name in POSITIVE_INTS:
    value = config[name]
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"config.{name} must be a positive int, got {value!r}.")
  if task is None:
    task = tasks_lib.make_task(config.task.name, **task_options(config))
  tasks_lib.check(task, config.num_prompts)
  _check_shaping(config, task)
  advantage = _registration("advantage", config)
  _registration("policy_loss", config)
  aggregation(config)
  _check_choices(config)
  if advantage.min_group_size > config.group_size:
    raise ValueError(f"config.group_size must be >= {advantage.min_group_size} for advantage "
                     f"{config.advantage!r} (it compares the samples of a group), got "
                     f"{config.group_size}.")
  policy = build_policy(config.model, vocab_size=task.vocab_size,
                        max_len=task.prompt_len + task.max_new_tokens,
                        logprob_chunk_size=_chunk_size(config), masked_ids=never_emitted(task))
  _check_text(task, policy, config)
  policy = _with_lora(config, policy)
  if advantage.needs_components and not task.component_weights:
    raise ValueError(f"advantage {config.advantage!r} normalises each reward component: task "
                     f"{task.name!r} has none (Task.component_weights; a text task has them "
                     f"with correct_weight/format_weight).")
  if advantage.needs_critic and not policy.has_values:
    raise ValueError(f"advantage {config.advantage!r} needs a critic: set "
                     f"config.model.value_head to 'shared' or 'separate'.")
  _check_batch(config)
  if config.get("init_from") and not os.path.exists(config.init_from):
    raise FileNotFoundError(f"config.init_from: no params at {config.init_from!r}.")
  if config.get("init_from") and (config.model.get("init_from") or None):
    raise ValueError(f"config.init_from ({config.init_from!r}) and config.model.init_from "
                     f"({config.model.init_from!r}) both name starting weights: set one.")
  pg.make_hparams(**config.hparams)  # names and ranges of the swept values
  return task, policy


def uses_lora(config) -> bool:
  return config.get("lora") is not None and config.lora.rank > 0


def _with_lora(config, policy):
  """The policy applying LoRA adapters when config.lora.rank > 0, every field checked."""
  if config.get("lora") is None:
    return policy
  rank, alpha, pattern = config.lora.rank, config.lora.alpha, config.lora.targets
  if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
    raise ValueError(f"config.lora.rank must be an int >= 0 (0: no LoRA, train every weight), "
                     f"got {rank!r}.")
  if not rank:
    return policy
  if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
    raise ValueError(f"config.lora.alpha must be a number > 0 (adapters scaled by alpha / "
                     f"rank), got {alpha!r}.")
  if not isinstance(pattern, str) or not pattern:
    raise ValueError(f"config.lora.targets must be a regex over parameter paths, got "
                     f"{pattern!r}.")
  if policy.has_values:
    raise ValueError(f"config.lora with config.model.value_head = "
                     f"{config.model.value_head!r}: LoRA trains adapters only, and a value head "
                     f"needs its own weights trained; use a critic-free estimator.")
  lora.targets(abstract_params(policy), pattern, rank)  # matches something, rank fits
  return with_lora(policy, alpha)


def task_options(config) -> dict:
  """config.task.options, with a text task's empty `tokenizer` set to the model's checkpoint
  (config.model.init_from): the prompts are encoded with the ids the model was trained on."""
  options = dict(config.task.options)
  if "tokenizer" in tasks_lib.task_options(config.task.name) and not options.get("tokenizer"):
    options["tokenizer"] = config.model.get("init_from") or ""
  return options


def _check_text(task, policy, config):
  """A task's ids must fit the model's embeddings, and padded prompts need a model that takes
  a prompt mask."""
  if task.vocab_size > policy.vocab_size:
    raise ValueError(f"task {task.name!r} uses {task.vocab_size} token ids but the model "
                     f"{config.model.name!r} has {policy.vocab_size} (its tokenizer is not this "
                     f"model's? config.task.options.tokenizer).")
  if task.prompt_pad_id is not None and not policy.takes_prompt_mask:
    raise ValueError(f"task {task.name!r} has prompts of different lengths (left-padded), which "
                     f"config.model.name = {config.model.name!r} cannot take; use 'llama'.")


def never_emitted(task) -> tuple:
  """The task's pad token, when it pads (has an end token) with a token of its own: the policy
  never samples it, and the trainer scores with the same masked distribution. (Without an end
  token, as in target_token, nothing is padded and the pad id is an ordinary token; a text task
  pads with its end token, so nothing is masked.)"""
  return (task.pad_id,) if task.eos_id >= 0 and task.pad_id not in task.stop_ids else ()


def _registration(field, config):
  get = pg.get_advantage if field == "advantage" else pg.get_policy_loss
  try:
    return get(config[field])
  except KeyError as e:
    raise KeyError(f"config.{field}: {e.args[0]}") from None


def aggregation(config) -> str:
  """The loss aggregation: config.aggregation, else the one the policy loss is registered with,
  else token-mean. A value that contradicts the loss's own is refused."""
  mode = config.get("aggregation")
  own = pg.get_policy_loss(config.policy_loss).aggregation
  if mode is None:
    return own or "token-mean"
  if mode not in pg.AGGREGATION_MODES:
    raise ValueError(f"config.aggregation must be one of {pg.AGGREGATION_MODES}, got {mode!r}.")
  if own is not None and mode != own:
    raise ValueError(f"config.aggregation: policy loss {config.policy_loss!r} is defined with "
                     f"{own!r}, got {mode!r} (leave it None).")
  return mode


def _check_rollout(config):
  from pg.core.rollout_correction import MODES
  mode = config.get("rollout_correction", "none")
  if mode not in MODES:
    raise ValueError(f"config.rollout_correction must be one of {MODES}, got {mode!r}.")
  k = config.get("staleness", 0)
  if isinstance(k, bool) or not isinstance(k, int) or k < 0:
    raise ValueError(f"config.staleness must be an int >= 0 (updates), got {k!r}.")
  dtype = config.get("sampler_dtype", "")
  if dtype not in ("", "float32", "bfloat16"):
    raise ValueError(f"config.sampler_dtype must be '', 'float32' or 'bfloat16', got {dtype!r}.")
  if not isinstance(config.get("off_policy_mask", False), bool):
    raise ValueError(f"config.off_policy_mask must be True or False, got "
                     f"{config.off_policy_mask!r}.")


def _check_shaping(config, task):
  f = config.get("oversample", 1)
  if isinstance(f, bool) or not isinstance(f, int) or f < 1:
    raise ValueError(f"config.oversample must be an int >= 1 (1: no dynamic sampling), got "
                     f"{f!r}.")
  if f > 1 and config.group_size < 2:
    raise ValueError(f"config.oversample = {f} keeps groups whose scores differ, which needs "
                     f"config.group_size >= 2, got {config.group_size}.")
  buf = config.get("overlong_buffer", 0)
  if isinstance(buf, bool) or not isinstance(buf, int) or not 0 <= buf <= task.max_new_tokens:
    raise ValueError(f"config.overlong_buffer must be an int in [0, max_new_tokens = "
                     f"{task.max_new_tokens}] (0: off), got {buf!r}.")


def _check_choices(config):
  _check_rollout(config)
  if config.kl_placement not in KL_PLACEMENTS:
    raise ValueError(f"config.kl_placement must be one of {KL_PLACEMENTS}, "
                     f"got {config.kl_placement!r}.")
  if config.kl_estimator not in KL_ESTIMATORS:
    raise ValueError(f"config.kl_estimator must be one of {sorted(KL_ESTIMATORS)}, "
                     f"got {config.kl_estimator!r}.")
  if config.get("on_nonfinite", "stop") not in ON_NONFINITE:
    raise ValueError(f"config.on_nonfinite must be one of {ON_NONFINITE}, "
                     f"got {config.on_nonfinite!r}.")
  fraction = config.get("max_skipped_fraction", 1.0)
  if (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
      or not 0 <= fraction <= 1):
    raise ValueError(f"config.max_skipped_fraction must be a number in [0, 1] (the share of a "
                     f"run's updates it may skip under on_nonfinite='skip'), got {fraction!r}.")
  if not isinstance(config.get("share_prompts", True), bool):
    raise ValueError(f"config.share_prompts must be True or False, got {config.share_prompts!r}.")
  if not config.max_grad_norm > 0:
    raise ValueError(f"config.max_grad_norm must be > 0, got {config.max_grad_norm}.")


def _chunk_size(config):
  chunk = config.logprob_chunk_size
  if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
    raise ValueError(f"config.logprob_chunk_size must be None or a positive int, got {chunk!r}.")
  return chunk


def _check_batch(config):
  batch = config.num_prompts * config.group_size
  if batch % config.num_minibatches:
    raise ValueError(f"config.num_minibatches ({config.num_minibatches}) must divide the batch "
                     f"num_prompts × group_size = {batch}.")
  if (batch // config.num_minibatches) % config.grad_accum_steps:
    raise ValueError(f"config.grad_accum_steps ({config.grad_accum_steps}) must divide each "
                     f"minibatch of {batch // config.num_minibatches} samples.")


def shares_prompts(config, policy=None) -> bool:
  """Whether the trainer's forward passes run each group's prompt once for its G samples (the
  policy's `response_stats` with N = B / G prompts). They can when the policy can and every
  gradient batch holds whole groups in order: one minibatch (then not shuffled: a sum over rows
  needs no order), cut into micro-batches of whole groups. PPO minibatches shuffle rows across
  groups, so num_minibatches > 1 runs the full sequence per row. `config.share_prompts = False`
  turns it off (the numbers are the same up to float rounding)."""
  G = config.group_size
  B = config.num_prompts * G
  able = True if policy is None else bool(policy.shares_prompts)
  return bool(able and config.get("share_prompts", True) and G > 1
              and config.num_minibatches == 1 and (B // config.grad_accum_steps) % G == 0)
