"""The train step, compiled whole: sample → score → advantages → loss → optax update.

`make_train(config)` returns two pure functions (PureJaxRL-style):

    init(key, hp) -> TrainState
    train_chunk(state) -> (state, metrics)    # K = config.updates_per_chunk updates, lax.scan

so `jax.jit(jax.vmap(train_chunk))` runs every seed in one program. Swept hyperparameters `hp`
(learning rate, β, γ, λ, ε, coefficients, temperature) live in the state as float32 leaves:
changing one never recompiles. Shapes, loop counts and registry names are static config.

Each update: prompts from the task's seeded generator (key folded with the step), G samples per
prompt in consecutive rows, behaviour log-probs from the sampler, scores from the task, values
and reference log-probs from one forward pass, advantages by registry name, then
`ppo_epochs` × `num_minibatches` gradient steps of the registry's policy loss (PPO epochs over
the same samples; with one epoch and one minibatch it is plain on-policy REINFORCE/GRPO/...).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import optax

import pg
from pg import sampler as sampler_lib
from pg import sharding, tasks
from pg.kl import KL_ESTIMATORS
from pg.model import ModelConfig, PolicyValue, init_params
from pg.tasks import make_task

KL_PLACEMENTS = ("none", "reward", "loss")
# A NaN or infinite reward, loss or gradient: "stop" (save the last good state and stop, naming
# the step, run and quantity) or "skip" (drop that update, count it in the `skipped` metric).
ON_NONFINITE = ("stop", "skip")
# Built-in estimators that compare samples within a group, and why a group of one fails them.
NEEDS_GROUPS = {"rloo": "leave-one-out",
                **dict.fromkeys(("grpo", "grpo_population", "group_mean"),
                                "a group of one has advantage 0 and never learns")}


@flax.struct.dataclass
class TrainState:
  params: Any
  ref_params: Any          # π_ref (the initial policy) when a KL penalty is used, else None
  opt_state: Any
  baseline_state: Any
  key: jax.Array
  step: jax.Array          # int32: updates done
  hp: dict                 # swept hyperparameters (float32 scalars)
  halted: jax.Array        # bool: a non-finite quantity stopped this run (on_nonfinite="stop")


def model_config(config, task) -> ModelConfig:
  m = config.model
  return ModelConfig(vocab_size=task.vocab_size,
                     max_len=task.prompt_len + task.max_new_tokens,
                     num_layers=m.num_layers, d_model=m.d_model, num_heads=m.num_heads,
                     mlp_ratio=m.mlp_ratio, value_head=m.value_head, dtype=m.dtype)


def validate(config):
  """Every static choice checked, with the field named, before anything compiles."""
  def positive(name, value):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"config.{name} must be a positive int, got {value!r}.")

  for name in ("num_seeds", "num_prompts", "group_size", "updates_per_chunk", "num_chunks",
               "ppo_epochs", "num_minibatches", "grad_accum_steps", "checkpoint_every"):
    positive(name, config[name])
  task = make_task(config.task.name, **config.task.options)
  tasks.check(task, config.num_prompts)
  for name, get in (("advantage", pg.get_advantage), ("policy_loss", pg.get_policy_loss)):
    try:
      get(config[name])
    except KeyError as e:
      raise KeyError(f"config.{name}: {e.args[0]}") from None
  if config.aggregation not in pg.AGGREGATION_MODES:
    raise ValueError(f"config.aggregation must be one of {pg.AGGREGATION_MODES}, "
                     f"got {config.aggregation!r}.")
  if config.kl_placement not in KL_PLACEMENTS:
    raise ValueError(f"config.kl_placement must be one of {KL_PLACEMENTS}, "
                     f"got {config.kl_placement!r}.")
  if config.kl_estimator not in KL_ESTIMATORS:
    raise ValueError(f"config.kl_estimator must be one of {sorted(KL_ESTIMATORS)}, "
                     f"got {config.kl_estimator!r}.")
  why_groups = NEEDS_GROUPS.get(config.advantage)
  if why_groups and config.group_size < 2:
    raise ValueError(f"config.group_size must be >= 2 for advantage {config.advantage!r} "
                     f"({why_groups}), got {config.group_size}.")
  mcfg = model_config(config, task)
  if config.advantage in ("gae", "value") and mcfg.value_head == "none":
    raise ValueError(f"advantage {config.advantage!r} needs a critic: set config.model.value_head "
                     f"to 'shared' or 'separate'.")
  batch = config.num_prompts * config.group_size
  if batch % config.num_minibatches:
    raise ValueError(f"config.num_minibatches ({config.num_minibatches}) must divide the batch "
                     f"num_prompts × group_size = {batch}.")
  if (batch // config.num_minibatches) % config.grad_accum_steps:
    raise ValueError(f"config.grad_accum_steps ({config.grad_accum_steps}) must divide each "
                     f"minibatch of {batch // config.num_minibatches} samples.")
  chunk = config.logprob_chunk_size
  if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
    raise ValueError(f"config.logprob_chunk_size must be None or a positive int, got {chunk!r}.")
  if config.get("on_nonfinite", "stop") not in ON_NONFINITE:
    raise ValueError(f"config.on_nonfinite must be one of {ON_NONFINITE}, "
                     f"got {config.on_nonfinite!r}.")
  if not isinstance(config.get("share_prompts", True), bool):
    raise ValueError(f"config.share_prompts must be True or False, got {config.share_prompts!r}.")
  if not config.max_grad_norm > 0:
    raise ValueError(f"config.max_grad_norm must be > 0, got {config.max_grad_norm}.")
  if config.get("init_from") and not os.path.exists(config.init_from):
    raise FileNotFoundError(f"config.init_from: no params at {config.init_from!r}.")
  pg.make_hparams(**config.hparams)  # names and ranges of the swept values
  return task, mcfg


def shares_prompts(config) -> bool:
  """Whether the trainer's forward passes run each group's prompt once for its G samples
  (`PolicyValue.grouped_response_hidden_and_values`). They can when every gradient batch holds
  whole groups in order: one minibatch (then not shuffled: a sum over rows needs no order), cut
  into micro-batches of whole groups. PPO minibatches shuffle rows across groups, so
  num_minibatches > 1 runs the full sequence per row. `config.share_prompts = False` turns it
  off (the numbers are the same up to float rounding)."""
  G = config.group_size
  B = config.num_prompts * G
  return bool(config.get("share_prompts", True) and G > 1 and config.num_minibatches == 1
              and (B // config.grad_accum_steps) % G == 0)


def save_params(path, params):
  """Params as flax msgpack bytes (a stage's output that a later config starts from)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as f:
    f.write(flax.serialization.to_bytes(params))


def load_params(path, mcfg: ModelConfig):
  """Params saved by `save_params`, checked against this model's shapes (config.init_from)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.init_from: no params at {path!r}.")
  key = jax.ShapeDtypeStruct((2,), jnp.uint32)  # shapes only: nothing runs or compiles
  template = jax.eval_shape(lambda k: init_params(mcfg, k), key)
  with open(path, "rb") as f:
    try:
      raw = flax.serialization.msgpack_restore(f.read())
    except Exception as e:  # msgpack raises several types for a file of another kind
      raise ValueError(f"config.init_from: {path!r} is not a params file written by "
                       f"pg.train.save_params ({type(e).__name__}: {e}).") from None
  diff = shape_mismatch(raw, template)
  if diff:
    raise ValueError(f"config.init_from: the params at {path!r} do not fit config.model "
                     f"({diff}).")
  return jax.tree_util.tree_map(jnp.asarray, raw)


def _leaf_shapes(tree) -> dict:
  """'a/b/c' -> shape for every array leaf (dict keys, attributes and indices alike)."""
  def name(k):
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        return str(getattr(k, attr))
    return str(k)
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {"/".join(name(k) for k in path): tuple(getattr(x, "shape", ()))
          for path, x in flat}


def shape_mismatch(saved, expected, limit: int = 3) -> str:
  """'' when both trees hold the same leaves with the same shapes; else the first few
  differences ('path: saved (8, 16), expected (8, 32)', missing and extra leaves)."""
  got, want = _leaf_shapes(saved), _leaf_shapes(expected)
  diffs = [f"{k}: saved {got[k]}, expected {want[k]}" for k in want if k in got
           and got[k] != want[k]]
  diffs += [f"{k}: not saved" for k in want if k not in got]
  diffs += [f"{k}: saved, not expected" for k in got if k not in want]
  more = f"; and {len(diffs) - limit} more" if len(diffs) > limit else ""
  return "; ".join(diffs[:limit]) + more


def hparams_from_config(config):
  return pg.make_hparams(**config.hparams)


def make_train(config, data_sharding=None):
  """Returns (init, train_chunk); see the module docstring.

  `data_sharding` (a `NamedSharding` over the batch axis, from `pg.sharding`) splits each
  update's batch across devices (data parallel); None leaves placement to XLA.
  """
  task, mcfg = validate(config)

  def constrain(tree, batch_axis=0):
    """Pins the batch axis of every leaf to the mesh's data axis (no-op without a mesh)."""
    if data_sharding is None:
      return tree
    spec = jax.sharding.PartitionSpec(*([None] * batch_axis), *data_sharding.spec)
    sharding = jax.sharding.NamedSharding(data_sharding.mesh, spec)
    return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)

  model = PolicyValue(mcfg)
  P, T, G = task.prompt_len, task.max_new_tokens, config.group_size
  B = config.num_prompts * G
  M = B // config.num_minibatches
  A = config.grad_accum_steps
  share_prompts = shares_prompts(config)
  has_critic = mcfg.value_head != "none"
  use_ref = config.kl_placement != "none"
  advantage_fn = pg.get_advantage(config.advantage)
  policy_loss_fn = pg.get_policy_loss(config.policy_loss)
  adam = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.scale_by_adam())

  start_params = load_params(config.init_from, mcfg) if config.get("init_from") else None

  def init(key, hp) -> TrainState:
    init_key, run_key = jax.random.split(key)
    params = init_params(mcfg, init_key) if start_params is None else start_params
    return TrainState(params=params, ref_params=params if use_ref else None,
                      opt_state=adam.init(params), baseline_state=pg.init_baseline_state(),
                      key=run_key, step=jnp.zeros((), jnp.int32), hp=hp,
                      halted=jnp.zeros((), bool))

  def forward(params, full_BxL, tokens_BxT, temperature):
    """Log-probs, entropies and values at the response positions of prompt ⧺ response rows.

    With `share_prompts`, each group's prompt goes through the trunk once (rows come in whole
    groups, so `full_BxL[::G]` holds every prompt once); else the full sequence per row."""
    if share_prompts:
      h_BxTxD, values_BxT = model.apply(params, full_BxL[::G, :P], tokens_BxT,
                                        method=PolicyValue.grouped_response_hidden_and_values)
    else:
      h_BxLxD, values_BxL = model.apply(params, full_BxL, method=PolicyValue.hidden_and_values)
      h_BxTxD = sampler_lib.response_logits(h_BxLxD, P)
      values_BxT = None if values_BxL is None else values_BxL[:, P - 1:-1]
    if config.logprob_chunk_size is None:
      logits_BxTxV = model.apply(params, h_BxTxD, method=PolicyValue.head)
      logp_BxT, entropy_BxT = pg.token_log_probs_and_entropy(logits_BxTxV, tokens_BxT,
                                                             temperature=temperature)
    else:  # the LM head applied chunk by chunk: no [B, T, V] logits at all
      head = params["params"]["lm_head"]
      logp_BxT, entropy_BxT = pg.head_log_probs_and_entropy(
          h_BxTxD, head["kernel"], head["bias"], tokens_BxT,
          temperature=temperature, chunk_size=config.logprob_chunk_size,
          compute_dtype=mcfg.dtype)
    return logp_BxT, entropy_BxT, values_BxT

  def loss_fn(params, batch, hp):
    logp, entropy, values = forward(params, batch["full"], batch["tokens"], hp["temperature"])
    mask = batch["mask"]
    inputs = pg.PolicyLossInputs(logp, batch["old_logp"], batch["advantages"], mask)
    policy_loss_BxT, loss_metrics = policy_loss_fn(inputs, hp)
    loss = pg.aggregate_loss(policy_loss_BxT, mask, config.aggregation)
    entropy_term = pg.aggregate_loss(pg.entropy_bonus(entropy, mask), mask, config.aggregation)
    loss = loss + hp["entropy_coef"] * entropy_term
    metrics = {"pg_loss": loss, "entropy": pg.masked_mean(entropy, mask), **loss_metrics}
    if has_critic:
      value_loss = pg.aggregate_loss(
          pg.clipped_value_loss(values, batch["old_values"], batch["returns"], mask,
                                hp["value_clip"]), mask, "token-mean")
      loss = loss + hp["value_coef"] * value_loss
      metrics["value_loss"] = value_loss
    if config.kl_placement == "loss":
      kl_term = pg.aggregate_loss(pg.kl_estimate(logp, batch["ref_logp"], config.kl_estimator),
                                  mask, config.aggregation)
      loss = loss + hp["kl_coef"] * kl_term
    metrics["loss"] = loss
    return loss, metrics

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def accumulated_grads(params, batch, hp):
    """Mean of the gradients (and metrics) of A equal micro-batches, one at a time in memory.

    Equal to the whole minibatch's gradient for the seq-mean-* aggregations; for token-mean it
    weighs each micro-batch's token mean equally."""
    def one(mb):
      (_, metrics), grads = grad_fn(params, mb, hp)
      return grads, metrics
    if A == 1:
      return one(batch)
    micro = jax.tree_util.tree_map(lambda x: x.reshape(A, x.shape[0] // A, *x.shape[1:]), batch)

    def add(total, mb):
      return jax.tree_util.tree_map(jnp.add, total, one(mb)), None
    first = jax.tree_util.tree_map(lambda x: x[0], micro)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, jax.eval_shape(one, first))
    total, _ = jax.lax.scan(add, zeros, micro)
    return jax.tree_util.tree_map(lambda x: x / A, total)

  def gradient_step(carry, batch):
    params, opt_state, hp, allowed = carry
    grads, metrics = accumulated_grads(params, batch, hp)
    grad_norm = optax.tree.norm(grads)
    metrics["grad_norm"] = grad_norm
    new_opt_state = adam.update(grads, opt_state, params)
    updates, new_opt_state = new_opt_state
    # AdamW: decoupled decay, both coefficients traced so a sweep never recompiles.
    updates = jax.tree_util.tree_map(
        lambda u, p: -hp["learning_rate"] * (u + hp["weight_decay"] * p), updates, params)
    # A non-finite loss or gradient never reaches the parameters: the step is skipped.
    loss_ok, grad_ok = jnp.isfinite(metrics["loss"]), jnp.isfinite(grad_norm)
    take = allowed & loss_ok & grad_ok
    keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(take, n, o), new, old)
    metrics["nonfinite_loss"] = (~loss_ok).astype(jnp.float32)
    metrics["nonfinite_grad"] = (~grad_ok).astype(jnp.float32)
    return (keep(optax.apply_updates(params, updates), params),
            keep(new_opt_state, opt_state), hp, allowed), metrics

  def update(state: TrainState, _):
    hp = state.hp
    key = jax.random.fold_in(state.key, state.step)
    prompt_key, sample_key, perm_key = jax.random.split(key, 3)
    prompts_NxP = task.sample_prompts(prompt_key, config.num_prompts)
    prompts_BxP = constrain(jnp.repeat(prompts_NxP, G, axis=0))
    s = constrain(sampler_lib.sample(
        state.params, mcfg, prompts_NxP, sample_key, max_new_tokens=T, eos_id=task.eos_id,
        pad_id=task.pad_id, temperature=hp["temperature"], group_size=G))
    scores_B = task.score(prompts_BxP, s.tokens_BxT, s.mask_BxT).astype(jnp.float32)
    extra = {} if task.extra_metrics is None else {
        k: jnp.mean(v) for k, v in task.extra_metrics(prompts_BxP, s.tokens_BxT,
                                                      s.mask_BxT).items()}
    full_BxL = jnp.concatenate([prompts_BxP, s.tokens_BxT], axis=1)
    mask = s.mask_BxT
    values_BxT = (forward(state.params, full_BxL, s.tokens_BxT, hp["temperature"])[2]
                  if has_critic else None)
    batch = {"full": full_BxL, "tokens": s.tokens_BxT, "mask": mask, "old_logp": s.logp_BxT}
    kl_to_ref_B = jnp.zeros((B,), jnp.float32)
    kl_reward = None
    if use_ref:
      ref_logp_BxT, _, _ = forward(state.ref_params, full_BxL, s.tokens_BxT, hp["temperature"])
      batch["ref_logp"] = ref_logp_BxT
      kl_to_ref_B = pg.masked_sum(pg.kl_k1(s.logp_BxT, ref_logp_BxT), mask, axis=1)
      if config.kl_placement == "reward":
        kl_reward = pg.kl_estimate(s.logp_BxT, ref_logp_BxT, config.kl_estimator)
    adv = advantage_fn(pg.AdvantageInputs(scores_B, mask, values_BxT, kl_reward, G), hp,
                       state.baseline_state)
    advantages_BxT = adv.advantages_BxT
    if config.whiten_advantages:
      advantages_BxT = pg.masked_whiten(advantages_BxT, mask, eps=hp["adv_eps"])
    batch["advantages"] = advantages_BxT
    if has_critic:
      batch["old_values"], batch["returns"] = values_BxT, adv.returns_BxT
    batch = constrain(jax.lax.stop_gradient(batch))

    def epoch(carry, e):
      if share_prompts:  # one minibatch of whole groups, in order
        return jax.lax.scan(gradient_step, carry,
                            constrain(jax.tree_util.tree_map(lambda x: x[None], batch), 1))
      perm_B = jax.random.permutation(jax.random.fold_in(perm_key, e), B)
      minibatches = constrain(jax.tree_util.tree_map(
          lambda x: x[perm_B].reshape(config.num_minibatches, M, *x.shape[1:]), batch), 1)
      return jax.lax.scan(gradient_step, carry, minibatches)

    reward_ok = jnp.all(jnp.isfinite(scores_B))
    allowed = reward_ok & ~state.halted
    (params, opt_state, _, _), step_metrics = jax.lax.scan(
        epoch, (state.params, state.opt_state, hp, allowed), jnp.arange(config.ppo_epochs))
    metrics = jax.tree_util.tree_map(jnp.mean, step_metrics)
    nonfinite = {"nonfinite_reward": (~reward_ok).astype(jnp.float32),
                 "nonfinite_loss": jnp.max(step_metrics["nonfinite_loss"]),
                 "nonfinite_grad": jnp.max(step_metrics["nonfinite_grad"])}
    bad = (nonfinite["nonfinite_reward"] + nonfinite["nonfinite_loss"]
           + nonfinite["nonfinite_grad"]) > 0
    metrics.update(nonfinite)
    # 1 where this update's samples changed nothing (a non-finite quantity, or a halted run).
    metrics["skipped"] = (bad | state.halted).astype(jnp.float32)
    baseline_state = jax.tree_util.tree_map(lambda n, o: jnp.where(allowed, n, o), adv.state,
                                            state.baseline_state)
    adv_sel = pg.masked_mean(advantages_BxT, mask)
    metrics.update({
        "mean_score": jnp.mean(scores_B),
        "advantage_mean": adv_sel,
        "advantage_std": jnp.sqrt(pg.masked_mean(jnp.square(advantages_BxT - adv_sel), mask)),
        "kl_to_ref": jnp.mean(kl_to_ref_B),
        "response_length": jnp.mean(jnp.sum(mask, axis=1)),
        "truncated_fraction": jnp.mean(s.truncated_B.astype(jnp.float32)),
        **extra,
    })
    # on_nonfinite = "stop": a run that met a non-finite quantity stays at its last good
    # state for the rest of the chunk; the host then saves it and stops, naming the quantity.
    halted = state.halted | (bad & (config.get("on_nonfinite", "stop") == "stop"))
    state = state.replace(params=params, opt_state=opt_state, baseline_state=baseline_state,
                          step=state.step + 1, halted=halted)
    return state, metrics

  def train_chunk(state: TrainState):
    return jax.lax.scan(update, state, None, length=config.updates_per_chunk)

  return init, train_chunk


def compiler_options():
  """XLA options for the train chunk. On CPU, region-based copy insertion: without it XLA copies
  every layer's KV cache at every decode step (the cache is read and then written in place in
  the same step), 8 × 4 MiB per step at the benchmark's sizes."""
  if jax.default_backend() == "cpu":
    return {"xla_cpu_copy_insertion_use_region_analysis": True}
  return None


def make_programs(config, num_runs: int | None = None):
  """`init(keys_R, hp)` and `train_chunk(state)`, vmapped over runs and jitted (state donated).

  A run is one seed of one hyperparameter setting: `keys_R` holds one PRNG key per run and `hp`
  one value per run for every swept hyperparameter (a scalar is shared by all runs), so a grid
  of settings × seeds is one program (`pg.sweep`). With more than one device (or `config.mesh`
  set), runs are spread over the mesh's "seed" axis and each run's batch over its "data" axis
  (`pg.sharding`); results do not depend on the mesh. `num_runs` defaults to config.num_seeds.
  """
  num_runs = config.num_seeds if num_runs is None else num_runs
  mesh = sharding.make_mesh(config, num_runs)
  options = compiler_options()
  if mesh is None:
    init, train_chunk = make_train(config)
    init_fn = jax.jit(jax.vmap(init))
    chunk_fn = jax.jit(jax.vmap(train_chunk), donate_argnums=0, compiler_options=options)
  else:
    init, train_chunk = make_train(config, sharding.data_sharding(mesh))
    per_run = sharding.seed_sharding(mesh)
    init_fn = jax.jit(jax.vmap(init, spmd_axis_name=sharding.SEED),
                      in_shardings=(per_run, per_run), out_shardings=per_run)
    chunk_fn = jax.jit(jax.vmap(train_chunk, spmd_axis_name=sharding.SEED),
                       in_shardings=per_run, out_shardings=per_run, donate_argnums=0,
                       compiler_options=options)

  def init_runs(keys_R, hp):
    R = keys_R.shape[0]
    return init_fn(keys_R, {k: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (R,))
                            for k, v in hp.items()})
  return init_runs, chunk_fn


def seed_keys(config):
  return jax.random.split(jax.random.PRNGKey(config.seed), config.num_seeds)


class Runs(NamedTuple):
  """The runs one program trains side by side (the vmapped axis R)."""
  keys: jax.Array   # [R, 2] PRNG keys: run r of seed j gets seed_keys(config)[j]
  hp: dict          # name -> float32 [R] (or a scalar shared by every run)
  labels: list      # per run, a JSON-able dict: {"seed": j, swept name: value, ...}


def seed_labels(config) -> list:
  return [{"seed": j} for j in range(config.num_seeds)]


def seed_runs(config) -> Runs:
  """One run per seed, all with config.hparams: what `experiments/train.py` trains."""
  return Runs(seed_keys(config), hparams_from_config(config), seed_labels(config))
