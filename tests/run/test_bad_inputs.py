"""A catalogue of bad configurations and inputs: each is refused with the exception type and a
message that names the field (and, where there is a finite set, the allowed values), and every
one that can be refused before XLA compiles anything is (checked with a compile listener).

A case is `make(tmp_path, monkeypatch) -> act`: `make` prepares (it may compile, e.g. to write
a checkpoint), `act()` must raise. Cases marked `compiles=True` can only fail while running (a
Python reward called from the compiled step).
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

import pg
from pg.run import experiment
from pg.policy import gpt as model
from pg import rlhf
from pg.policy import sampler
from pg.run import sweep
from pg import tasks
from pg.rlhf import text
from pg import train
from pg.train import sharding

from compile_guard import no_compiles
from tiny_config import tiny


class Case(NamedTuple):
  id: str
  make: Callable          # (tmp_path, monkeypatch) -> act; act() must raise
  exc: type | tuple
  match: str              # regex searched in str(exception)
  compiles: bool = False  # True: the error can only come from running the compiled step
  after: Callable | None = None  # (tmp_path) -> None, checked after the raise


# ---------------------------------------------------------------------------------------------
# Configs: the tests' tiny config cut to the smallest that trains (1 seed, 4 prompts × 2, width
# 16, one update), with fields replaced (a dict value sets its keys one by one, so
# `task={"options": {}}` replaces the options instead of merging them).

def small(**overrides):
  c = tiny(num_seeds=1, num_prompts=4, group_size=2, updates_per_chunk=1, num_chunks=1,
           model={"d_model": 16},
           task={"options": {"length": 3, "num_symbols": 2, "exclusive": False}})
  for k, v in overrides.items():
    if isinstance(v, dict):
      for kk, vv in v.items():
        c[k][kk] = vv
    else:
      c[k] = v
  return c


def lora_llama(value_head="none", **lora):
  """A one-layer Llama (width 16, KV width 8) with LoRA options `lora`."""
  c = small()
  c.model = {"name": "llama", "num_layers": 1, "d_model": 16, "num_heads": 2, "num_kv_heads": 1,
             "mlp_dim": 32, "value_head": value_head}
  c.lora.update({"rank": 2, **lora})
  return c


def programs(config):
  """`make_programs` on what `build` made (built, not compiled)."""
  return train.make_programs(config, *train.build(config))


def train_step(config, task=None):
  """`make_train` on what `build` made."""
  return train.make_train(config, *train.build(config, task))


def config_case(id, overrides, exc, match, build=train.build):
  """`build(small(**overrides))` must raise before compiling."""
  return Case(id, lambda tmp, mp: lambda: build(small(**overrides)), exc, match)


def hp_case(name, value, interval):
  return config_case(f"hparams.{name}={value}", {"hparams": {name: value}}, ValueError,
                     rf"hyperparameter `{name}` .*must lie in {re.escape(interval)}, got ")


HPARAMS = [
    hp_case("learning_rate", 0.0, "(0.0, inf)"),
    hp_case("learning_rate", -1e-3, "(0.0, inf)"),
    hp_case("learning_rate", float("nan"), "(0.0, inf)"),
    hp_case("learning_rate", float("inf"), "(0.0, inf)"),
    hp_case("gamma", 1.5, "[0.0, 1.0]"),
    hp_case("gamma", -0.1, "[0.0, 1.0]"),
    hp_case("lam", -0.5, "[0.0, 1.0]"),
    hp_case("lam", 1.01, "[0.0, 1.0]"),
    hp_case("kl_coef", -0.1, "[0.0, inf)"),
    hp_case("adv_eps", 0.0, "(0.0, inf)"),
    hp_case("ppo_eps_low", -0.1, "[0.0, 1.0)"),
    hp_case("ppo_eps_low", 1.0, "[0.0, 1.0)"),
    hp_case("ppo_eps_high", -0.2, "[0.0, inf)"),
    hp_case("temperature", 0.0, "(0.0, inf)"),
    hp_case("temperature", -1.0, "(0.0, inf)"),
    hp_case("baseline_decay", 1.0, "[0.0, 1.0)"),
    hp_case("value_clip", 0.0, "(0.0, inf)"),
    hp_case("weight_decay", -1e-2, "[0.0, inf)"),
    config_case("hparams.unknown_name", {"hparams": {"learning_rat": 1e-3}}, KeyError,
                r"unknown hyperparameter\(s\) \['learning_rat'\]; known: .*learning_rate"),
    Case("make_hparams.string", lambda tmp, mp: lambda: pg.make_hparams(learning_rate="fast"),
         TypeError, r"hyperparameter `learning_rate` must be a number or an array of numbers"),
    Case("make_hparams.one_bad_entry_of_a_sweep_axis",
         lambda tmp, mp: lambda: pg.make_hparams(lam=np.array([0.5, 1.5])), ValueError,
         r"hyperparameter `lam` .*must lie in \[0.0, 1.0\], got 1.5"),
]

STATIC = [
    config_case(f"{name}={value}", {name: value}, ValueError,
                rf"config.{name} must be a positive int, got {value}")
    for name, value in (("num_seeds", 0), ("num_prompts", -1), ("updates_per_chunk", 0),
                        ("num_chunks", 0), ("ppo_epochs", 0), ("checkpoint_every", 0))
] + [
    config_case("num_minibatches=3", {"num_minibatches": 3}, ValueError,
                r"config.num_minibatches \(3\) must divide the batch num_prompts × group_size = 8"),
    config_case("grad_accum_steps=3", {"grad_accum_steps": 3}, ValueError,
                r"config.grad_accum_steps \(3\) must divide each minibatch of 8"),
] + [
    config_case(f"group_size=1,advantage={name}", {"group_size": 1, "advantage": name},
                ValueError, rf"config.group_size must be >= 2 for advantage '{name}'.*got 1")
    for name in ("rloo", "grpo", "grpo_population", "group_mean")
] + [
    config_case("advantage=unknown", {"advantage": "nope"}, KeyError,
                r"config.advantage: unknown advantage estimator 'nope'; known: .*gae.*rloo"),
    config_case("policy_loss=unknown", {"policy_loss": "nope"}, KeyError,
                r"config.policy_loss: unknown policy loss 'nope'; known: .*ppo, reinforce"),
    config_case("aggregation=unknown", {"aggregation": "mean"}, ValueError,
                r"config.aggregation must be one of \('token-mean', 'seq-mean-token-mean', "
                r"'seq-mean-token-sum', 'seq-mean-token-sum-norm'\), got 'mean'"),
    config_case("kl_placement=unknown", {"kl_placement": "both"}, ValueError,
                r"config.kl_placement must be one of \('none', 'reward', 'loss'\), got 'both'"),
    config_case("kl_estimator=unknown", {"kl_estimator": "k4"}, ValueError,
                r"config.kl_estimator must be one of \['k1', 'k2', 'k3'\], got 'k4'"),
    config_case("on_nonfinite=unknown", {"on_nonfinite": "ignore"}, ValueError,
                r"config.on_nonfinite must be one of \('stop', 'skip'\), got 'ignore'"),
    config_case("max_grad_norm=0", {"max_grad_norm": 0.0}, ValueError,
                r"config.max_grad_norm must be > 0, got 0.0"),
    config_case("share_prompts=None", {"share_prompts": None}, ValueError,
                r"config.share_prompts must be True or False, got None"),
    config_case("logprob_chunk_size=0", {"logprob_chunk_size": 0}, ValueError,
                r"config.logprob_chunk_size must be None or a positive int, got 0"),
    config_case("advantage=gae,no_critic", {"advantage": "gae"}, ValueError,
                r"advantage 'gae' needs a critic: set config.model.value_head to 'shared' or "
                r"'separate'"),
    config_case("model.d_model=15", {"model": {"d_model": 15}}, ValueError,
                r"model.d_model \(15\) must be a multiple of model.num_heads \(2\)"),
    config_case("model.num_layers=0", {"model": {"num_layers": 0}}, ValueError,
                r"model.num_layers must be >= 1, got 0"),
    config_case("model.value_head=unknown", {"model": {"value_head": "big"}}, ValueError,
                r"model.value_head must be one of \('none', 'shared', 'separate'\), got 'big'"),
    config_case("model.dtype=float16", {"model": {"dtype": "float16"}}, ValueError,
                r"model.dtype must be 'float32' or 'bfloat16', got 'float16'"),
    config_case("task.name=unknown", {"task": {"name": "chess", "options": {}}}, KeyError,
                r"config.task.name: unknown task 'chess'; known: addition, (\w+, )*count_up, "
                r"(\w+, )*needle, (\w+, )*target_token"),
    config_case("task.options=misspelt", {"task": {"options": {"lenght": 3}}}, TypeError,
                r"config.task.options .* do not fit task 'needle' .*'lenght'.*its options: "
                r"length, num_symbols, exclusive"),
    config_case("task.options.num_symbols=1", {"task": {"options": {"num_symbols": 1}}},
                ValueError, r"task.num_symbols >= 2"),
    config_case("mesh.seed=-1", {"mesh": {"seed": -1, "data": 1}}, ValueError,
                r"config.mesh.seed and config.mesh.data must be >= 0 \(0: choose\)",
                build=programs),
    Case("mesh.fsdp=3", lambda tmp, mp: lambda: sharding.mesh_shape(small(mesh={"fsdp": 3}), 8),
         ValueError, r"config.mesh.fsdp \(3\) must divide the number of devices, 8"),
    Case("lora.targets=nothing", lambda tmp, mp: lambda: train.build(lora_llama(targets="nope")),
         ValueError, r"config.lora.targets 'nope' matches no projection of this model; its "
         r"projections: params/trunk/layer_0/down/kernel, .*params/trunk/layer_0/q/kernel, "),
    Case("lora.rank=too_big", lambda tmp, mp: lambda: train.build(lora_llama(rank=17)),
         ValueError, r"config.lora.rank \(17\) is larger than the matrix "
         r"params/trunk/layer_0/\w+/kernel \(\d+, \d+\) \(rank at most 16\)"),
    Case("lora.rank=-1", lambda tmp, mp: lambda: train.build(lora_llama(rank=-1)),
         ValueError, r"config.lora.rank must be an int >= 0"),
    Case("lora.alpha=0", lambda tmp, mp: lambda: train.build(lora_llama(alpha=0.0)),
         ValueError, r"config.lora.alpha must be a number > 0"),
    Case("lora+value_head", lambda tmp, mp: lambda: train.build(lora_llama(value_head="shared")),
         ValueError, r"config.lora with config.model.value_head = 'shared'"),
    Case("mesh=too_many_devices",
         lambda tmp, mp: lambda: programs(
             small(mesh={"seed": len(jax.devices()) + 1, "data": 1})), ValueError,
         r"config.mesh: seed × data × fsdp = \d+ × 1 × 1 must equal the number of devices"),
]


# ---------------------------------------------------------------------------------------------
# Task inputs: shapes checked by `tasks.check` (eval_shape only); Python rewards while running.

def python_task(reward_fn, **fields):
  spec = dict(vocab_size=6, prompt_len=1, max_new_tokens=3, eos_id=4, pad_id=5,
              sample_prompts=lambda key, n: jax.random.randint(key, (n, 1), 0, 4))
  spec.update(fields)
  return tasks.python_task("bad", reward_fn, **spec)


def handed_down(task):
  """make: builds the train step with `task` handed down (config.task.name = 'bad')."""
  def make(tmp, monkeypatch):
    return lambda: train_step(small(task={"name": "bad", "options": {}}), task)
  return make


def pure_task(score, **fields):
  base = tasks.make_task("needle", length=3, num_symbols=2)
  return tasks.Task("bad", **{**dict(vocab_size=base.vocab_size, prompt_len=2, max_new_tokens=3,
                                     eos_id=base.eos_id, pad_id=base.pad_id,
                                     sample_prompts=base.sample_prompts, score=score), **fields})


def scored_eagerly(reward_fn):
  """make: `act` scores two rows through the jitted, vmapped Python reward."""
  task = python_task(reward_fn)

  def act():
    prompts = jnp.zeros((2, 1, 1), jnp.int32)
    tokens, mask = jnp.zeros((2, 1, 3), jnp.int32), jnp.ones((2, 1, 3))
    return jax.block_until_ready(jax.jit(jax.vmap(task.score))(prompts, tokens, mask))
  return lambda tmp, mp: act


def prompt_longer_than_the_context(tmp, mp):
  cfg = model.ModelConfig(vocab_size=6, max_len=4, num_layers=1, d_model=8, num_heads=2)
  key = np.zeros(2, np.uint32)
  params = zeros_like_shapes(jax.eval_shape(lambda k: model.init_params(cfg, k), key))
  return lambda: jax.jit(lambda p, k: sampler.sample(
      model.GPTPolicy(cfg), p, jnp.zeros((2, 3), jnp.int32), k, max_new_tokens=2, eos_id=4, pad_id=5))(params, key)


def raise_zero_division(prompt, response):
  return 1 / 0


TASK_INPUTS = [
    Case("task.sample_prompts_longer_than_prompt_len",
         handed_down(python_task(lambda p, r: 1.0,
                                sample_prompts=lambda key, n: jnp.zeros((n, 5), jnp.int32))),
         ValueError, r"task 'bad': sample_prompts\(key, 4\) must return integer token ids of "
                     r"shape \(4, task.prompt_len = 1\) to fit the model's context of "
                     r"prompt_len \+ max_new_tokens = 4, got int32\[4, 5\]"),
    Case("task.sample_prompts_float", handed_down(python_task(
        lambda p, r: 1.0, sample_prompts=lambda key, n: jnp.zeros((n, 1), jnp.float32))),
         ValueError, r"sample_prompts\(key, 4\) must return integer token ids.*got float32"),
    Case("task.score_shape_Bx1", handed_down(pure_task(lambda p, t, m: jnp.ones((t.shape[0], 1)))),
         ValueError, r"task 'bad': score\(prompts_BxP, tokens_BxT, mask_BxT\) must return one "
                     r"real score per row, shape \(4,\).*got float32\[4, 1\]"),
    Case("task.score_complex", handed_down(pure_task(
        lambda p, t, m: jnp.ones(t.shape[:1], jnp.complex64))), ValueError,
         r"must return one real score per row, shape \(4,\) of a float, int or bool dtype, "
         r"got complex64\[4\]"),
    Case("task.pad_id_outside_vocab", handed_down(python_task(lambda p, r: 1.0, pad_id=6)),
         ValueError, r"task 'bad': task.pad_id must lie in \[0, 6\) \(vocab_size = 6\), got 6"),
    Case("task.eos_id_outside_vocab", handed_down(python_task(lambda p, r: 1.0, eos_id=9)),
         ValueError, r"task 'bad': task.eos_id must lie in \[-1, 6\)"),
    Case("task.prompt_len=0", handed_down(python_task(lambda p, r: 1.0, prompt_len=0)),
         ValueError, r"task 'bad': task.prompt_len must be a positive int, got 0"),
    Case("sampler.prompt_longer_than_the_context", prompt_longer_than_the_context, ValueError,
         r"sample: prompt length 3 \+ max_new_tokens 2 exceeds the model's context "
         r"model.max_len = 4"),
    Case("python_reward.raises", scored_eagerly(raise_zero_division), jax.errors.JaxRuntimeError,
         r"task 'bad': reward_fn raised ZeroDivisionError: division by zero \(for prompt \[0\] "
         r"and response", compiles=True),
    Case("python_reward.wrong_shape", scored_eagerly(lambda p, r: [1.0, 2.0]),
         jax.errors.JaxRuntimeError,
         r"task 'bad': reward_fn must return a float, got \[1.0, 2.0\] \(shape \(2,\); "
         r"one number per response\)", compiles=True),
    Case("python_reward.string", scored_eagerly(lambda p, r: "0.5"), jax.errors.JaxRuntimeError,
         r"task 'bad': reward_fn must return a float, got '0.5' \(type str\)",
         compiles=True),
    Case("python_reward.complex", scored_eagerly(lambda p, r: 1 + 2j),
         jax.errors.JaxRuntimeError,
         r"task 'bad': reward_fn must return a float, got \(1\+2j\) \(type complex\)",
         compiles=True),
    Case("python_reward.none", scored_eagerly(lambda p, r: None), jax.errors.JaxRuntimeError,
         r"task 'bad': reward_fn must return a float, got None \(type NoneType\)",
         compiles=True),
]


# ---------------------------------------------------------------------------------------------
# Checkpoints and workdirs: a workdir as a run of small() leaves it after one chunk.

def zeros_like_shapes(tree):
  return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), tree)


def workdir_of_a_run(tmp, config):
  """tmp/w with the config.json and the chunk-1 checkpoint a run of `config` writes (its state
  zeros, from `eval_shape`: the train step is never compiled)."""
  workdir = str(tmp / "w")
  os.makedirs(workdir)
  runs = train.seed_runs(config)
  experiment._check_workdir(workdir, config, runs.labels)
  init, _ = train.make_programs(config, *train.build(config))
  state = zeros_like_shapes(jax.eval_shape(init, runs.keys, runs.hp))
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as manager:
    manager.save(1, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
  return workdir


def checkpoint_files(workdir):
  root = os.path.join(workdir, "checkpoints")
  return sorted((os.path.relpath(os.path.join(d, f), root), os.path.getsize(os.path.join(d, f)))
                for d, _, files in os.walk(root) for f in files)


_SAVED = {}


def another_runs_checkpoint(**overrides):
  """make: a checkpoint of small() and no config.json (only the checkpoint tells the runs
  apart); act resumes there with small(**overrides)."""
  def make(tmp, mp):
    workdir = workdir_of_a_run(tmp, small())
    os.remove(os.path.join(workdir, "config.json"))
    _SAVED["files"] = checkpoint_files(workdir)
    return lambda: experiment.run(small(**overrides), workdir, verbose=False)
  return make


def nothing_deleted(tmp):
  assert checkpoint_files(str(tmp / "w")) == _SAVED["files"]


def another_config(tmp, mp):
  workdir = workdir_of_a_run(tmp, small())
  return lambda: experiment.run(small(group_size=4), workdir, verbose=False)


def unreadable_config_json(tmp, mp):
  workdir = str(tmp / "w")
  os.makedirs(workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write('{"config": {"num_')  # a write cut short
  return lambda: experiment.run(small(), workdir, verbose=False)


def write_params(path, d_model=16, value_head="none", garbage=False):
  """init_from params (zeros) of a model for small()'s task, of the given size and head."""
  if garbage:
    with open(path, "wb") as f:
      f.write(b"\x00 not msgpack \xff" * 4)
    return
  task = tasks.make_task("needle", length=3, num_symbols=2, exclusive=False)
  cfg = model.ModelConfig(vocab_size=task.vocab_size, max_len=5, num_layers=1,
                          d_model=d_model, num_heads=2, value_head=value_head)
  train.save_params(path, zeros_like_shapes(jax.eval_shape(
      lambda key: model.init_params(cfg, key), jax.ShapeDtypeStruct((2,), jnp.uint32))))


def saved_params(**kwargs):
  """make: writes init_from params (`write_params(**kwargs)`); act builds small() on them."""
  def make(tmp, mp):
    path = str(tmp / "params.msgpack")
    write_params(path, **kwargs)
    return lambda: train_step(small(init_from=path))
  return make


def run_on_other_model_params(tmp, mp):
  """experiment.run on init_from params of another size: refused before the workdir is made,
  so a rerun with the path fixed is not refused as 'a different config'."""
  path = str(tmp / "params.msgpack")
  write_params(path, d_model=32)
  return lambda: experiment.run(small(init_from=path), str(tmp / "w"), verbose=False)


def workdir_untouched(tmp):
  assert not os.path.exists(tmp / "w")


CHECKPOINTS = [
    Case("workdir.another_runs_checkpoint_seed_count", another_runs_checkpoint(num_seeds=2),
         ValueError, r"holds a checkpoint \(chunk 1\) of another run .*lm_head/bias: saved "
                     r"\(1, 7\), expected \(2, 7\).*nothing was deleted", after=nothing_deleted),
    Case("workdir.another_runs_checkpoint", another_runs_checkpoint(model={"d_model": 32}),
         ValueError,
         r"holds a checkpoint \(chunk 1\) of another run whose state does not fit this config "
         r"\(params/params/lm_head/kernel: saved \(1, 16, 7\), expected \(1, 32, 7\);.*nothing "
         r"was deleted",
         after=nothing_deleted),
    Case("workdir.another_config", another_config, ValueError,
         r"holds a run with a different config \(fields \['group_size'\]\)"),
    Case("workdir.config_json_cut_short", unreadable_config_json, ValueError,
         r"config.json is not the JSON a run writes"),
    Case("init_from.other_model_size", saved_params(d_model=32), ValueError,
         r"config.init_from: the params at .* do not fit config.model \(params/lm_head/kernel: "
         r"saved \(32, 7\), expected \(16, 7\);"),
    Case("init_from.reward_model_params", saved_params(value_head="shared"), ValueError,
         r"config.init_from: .* do not fit config.model \(params/value_out/\S+: saved, not "
         r"expected"),
    Case("init_from.other_model_size_in_a_run", run_on_other_model_params, ValueError,
         r"config.init_from: the params at .* do not fit config.model", after=workdir_untouched),
    Case("init_from.not_a_params_file", saved_params(garbage=True), ValueError,
         r"config.init_from: .* is not a params file written by pg.train.save_params"),
    config_case("init_from.missing", {"init_from": "/nonexistent/pi_ref.msgpack"},
                FileNotFoundError, r"config.init_from: no params at '/nonexistent/pi_ref.msgpack'"),
]


# ---------------------------------------------------------------------------------------------
# Sweeps: refused by sweep.run before the first program compiles.

def sweep_case(id, values, exc, match):
  def make(tmp, mp):
    c = small()
    for path, v in values.items():
      *parents, leaf = path.split(".")
      block = c.sweep
      for p in parents:
        block = block[p]
      block[leaf] = v
    return lambda: sweep.run(c, str(tmp / "sweep"), verbose=False, log=lambda *a: None)
  return Case(id, make, exc, match)


SWEEPS = [
    sweep_case("sweep.learning_rate=0", {"learning_rate": (0.0, 1e-3)}, ValueError,
               r"config.sweep.learning_rate: hyperparameter `learning_rate` .*must lie in "
               r"\(0.0, inf\), got 0.0"),
    sweep_case("sweep.gamma>1", {"gamma": (0.9, 1.5)}, ValueError,
               r"config.sweep.gamma: .*must lie in \[0.0, 1.0\], got 1.5"),
    sweep_case("sweep.learning_rate=()", {"learning_rate": ()}, ValueError,
               r"config.sweep.learning_rate must be a non-empty tuple of values"),
    sweep_case("sweep.misspelt_name", {"learning_rat": (1e-3,)}, KeyError,
               r"config.sweep.learning_rat is not a field pg reads .*did you mean "
               r"config.sweep.learning_rate"),
    sweep_case("sweep.group_size=1", {"group_size": (1, 2)}, ValueError,
               r"config.sweep: the setting \{'group_size': 1\} is refused: config.group_size "
               r"must be >= 2 for advantage 'rloo'"),
    sweep_case("sweep.advantage=unknown", {"advantage": ("rloo", "nope")}, KeyError,
               r"config.sweep: the setting \{'advantage': 'nope'\} is refused: config.advantage: "
               r"unknown advantage estimator 'nope'; known: "),
    sweep_case("sweep.model.num_heads=3", {"model.num_heads": (2, 3)}, ValueError,
               r"model.d_model \(16\) must be a multiple of model.num_heads \(3\)"),
    sweep_case("sweep.runs_per_batch=-1", {"runs_per_batch": -1}, ValueError,
               r"config.sweep.runs_per_batch must be an int >= 0"),
]


# ---------------------------------------------------------------------------------------------
# The RLHF pipeline: refused before its first stage runs.

def rlhf_config(**rlhf_fields):
  c = small()
  c.model = ml_collections.ConfigDict({"name": "llama", "num_layers": 1, "d_model": 16,
                                       "num_heads": 2, "num_kv_heads": 1, "mlp_dim": 32,
                                       "value_head": "none", "dtype": "float32"})
  c.rlhf = ml_collections.ConfigDict({
      "vocab_size": 300, "prompt_len": 4, "response_len": 6,
      "pretrain_steps": 2, "pretrain_batch": 4, "pretrain_lr": 3e-3,
      "num_pairs": 8, "bt_temperature": 0.1, "heldout_fraction": 0.25,
      "reward_steps": 2, "reward_batch": 4, "reward_lr": 1e-3, **rlhf_fields})
  c.kl_placement = "reward"
  c.sweep.kl_coef = (0.0, 0.1)
  return c


def pipeline(stages, config=None, files=(), corpus=None):
  def make(tmp, monkeypatch):
    for name in files:  # present (their content is not read before the refusal)
      os.makedirs(os.path.dirname(str(tmp / name)), exist_ok=True)
      open(tmp / name, "w").close()
    if corpus is not None:
      monkeypatch.setattr(text, "documents", lambda: [corpus] if corpus else [])
    c = rlhf_config() if config is None else config
    return lambda: rlhf.run(c, str(tmp), stages=stages, verbose=False)
  return make


def rl_without_group_size():
  c = rlhf_config()
  c.group_size = 1
  return c


def without_rlhf_block():
  return small()


RLHF = [
    Case("rlhf.unknown_stage", pipeline(("train",)), ValueError,
         r"unknown stage\(s\) \['train'\]; stages: pretrain, preferences, reward, rl, report"),
    Case("rlhf.rl_alone_without_pi_ref", pipeline(("rl",)), FileNotFoundError,
         r"stage 'rl' reads pi_ref, written by stage 'pretrain', and it is not in the "
         r"workdir"),
    Case("rlhf.rl_alone_without_reward_model", pipeline("rl", files=("pi_ref",)),
         FileNotFoundError, r"stage 'rl' reads reward_model.msgpack, written by stage 'reward'"),
    Case("rlhf.reward_alone_without_preferences",
         pipeline(("reward",), files=("pi_ref",)), FileNotFoundError,
         r"stage 'reward' reads preferences.npz, written by stage 'preferences'"),
    Case("rlhf.report_alone_without_rl",
         pipeline(("report",), files=("pi_ref", "reward_model.msgpack")),
         FileNotFoundError, r"stage 'report' reads rl/results.jsonl, written by stage 'rl'"),
    Case("rlhf.empty_corpus", pipeline(("pretrain",), corpus=""), ValueError,
         r"the corpus is empty"),
    Case("rlhf.corpus_smaller_than_the_vocabulary",
         pipeline(("pretrain",), corpus="the cat sat on the mat. " * 20), ValueError,
         r"config.rlhf.vocab_size must be at most \d+ for this corpus \(256 bytes, 2 special "
         r"tokens and \d+ merges\), got 300"),
    Case("rlhf.corpus_shorter_than_one_window",
         pipeline(("pretrain",), config=rlhf_config(vocab_size=259), corpus="abc"),
         ValueError, r"the corpus has \d+ tokens, fewer than one window of 10"),
    Case("rlhf.vocab_size=3", pipeline(("pretrain",), config=rlhf_config(vocab_size=3)),
         ValueError, r"config.rlhf.vocab_size must exceed 258 \(256 bytes and the special "
                     r"tokens"),
    Case("rlhf.bt_temperature=0", pipeline(("preferences",),
                                           config=rlhf_config(bt_temperature=0.0),
                                           files=("pi_ref",)),
         ValueError, r"config.rlhf.bt_temperature must be > 0, got 0.0"),
    Case("rlhf.heldout_fraction=1", pipeline(("reward",), config=rlhf_config(heldout_fraction=1.0),
                                             files=("pi_ref", "preferences.npz")),
         ValueError, r"config.rlhf.heldout_fraction must lie in \[0, 1\) and leave at least one "
                     r"of the config.rlhf.num_pairs = 8 pairs"),
    Case("rlhf.pretrain_steps=0", pipeline(("pretrain",), config=rlhf_config(pretrain_steps=0)),
         ValueError, r"config.rlhf.pretrain_steps must be a positive int, got 0"),
    Case("rlhf.rl_config_refused_before_pretraining",
         pipeline(("pretrain",), config=rl_without_group_size()), ValueError,
         r"config.group_size must be >= 2 for advantage 'rloo'"),
    Case("rlhf.no_rlhf_block", pipeline(("pretrain",), config=without_rlhf_block()), ValueError,
         r"config.rlhf: the pipeline's config needs an rlhf block"),
]

CASES = HPARAMS + STATIC + TASK_INPUTS + CHECKPOINTS + SWEEPS + RLHF


def test_the_catalogue_is_large_and_its_ids_distinct():
  assert len(CASES) >= 35
  assert len({c.id for c in CASES}) == len(CASES)


def test_no_compiles_detects_a_compile():
  with pytest.raises(AssertionError, match="compiled before raising"):
    with no_compiles():
      jax.jit(lambda x: 2.0 * x + 7.0)(np.arange(3, dtype=np.float32))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_naming_the_field(case, tmp_path, monkeypatch):
  act = case.make(tmp_path, monkeypatch)
  monitor = contextlib.nullcontext() if case.compiles else no_compiles()
  with monitor:
    with pytest.raises(case.exc, match=case.match):
      act()
  if case.after is not None:
    case.after(tmp_path)
