"""The train step, compiled whole: sample → score → advantages → loss → optax update.

`make_train(config, task, policy)` returns two pure functions (PureJaxRL-style):

    init(key, hp) -> TrainState
    train_chunk(state) -> (state, metrics)    # K = config.updates_per_chunk updates, lax.scan

so `jax.jit(jax.vmap(train_chunk))` runs every seed in one program (`pg.train.programs`). Swept
hyperparameters `hp` (learning rate, β, γ, λ, ε, coefficients, temperature) live in the state as
float32 leaves: changing one never recompiles. Shapes, loop counts and names are static config.

Each update: prompts from the task's seeded generator (key folded with the step), G samples per
prompt in consecutive rows, behaviour log-probs from the sampler, scores from the task, values
and reference log-probs from one forward pass each, advantages by registry name, then
`ppo_epochs` × `num_minibatches` gradient steps of the training loss (`pg.train.loss`; with one
epoch and one minibatch it is plain on-policy REINFORCE/GRPO/...).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

import pg
from pg.core import rollout_correction as rc
from pg.core import shaping
from pg.policy import lora as lora_lib
from pg.policy import sampler as sampler_lib
from pg.policy.base import with_compute_dtype
from pg.train.build import aggregation, shares_prompts, uses_lora
from pg.train.loss import make_loss
from pg.train.optim import optimizer
from pg.train.params_io import load_params


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
  # config.staleness = k > 0: the params of the last k updates, `[k, ...]` per leaf (slot
  # step % k holds those of update step − k, which the sampler draws with); else None.
  past_params: Any = None
  # config.lora: the frozen base's variables ({"params": ...}), one copy shared by every run.
  # Set only inside the compiled chunk (an unbatched argument); `params` then holds the run's
  # adapters ({"lora": ...}, `pg.policy.lora`), and the base alone is π_ref.
  base: Any = None


def initial_params(config, policy):
  """The params every run starts from: `config.init_from` (`pg.train.save_params`), else the
  policy's pretrained checkpoint (`config.model.init_from`), else None (random init)."""
  if config.get("init_from"):
    return load_params(config.init_from, policy)
  return policy.pretrained_params()


def lora_base(config, policy):
  """With config.lora: the frozen base every run's adapters sit on, built once: the starting
  params (`initial_params`) under a policy initialised from `config.seed`."""
  params = jax.jit(policy.init)(jax.random.PRNGKey(config.seed))
  start = initial_params(config, policy)
  return params if start is None else policy.warm_start(params, start)


def make_train(config, task, policy, data_sharding=None, on_update=None, param_sharding=None):
  """Returns (init, train_chunk) for the `task` and `policy` that `pg.train.build(config)` made;
  see the module docstring.

  `data_sharding` (a `NamedSharding` over the batch axis, from `pg.train.sharding`) splits each
  update's batch across devices (data parallel); None leaves placement to XLA. `on_update`, a
  host function, is called (`jax.debug.callback`) with the state's step as each update ends,
  for progress bars; it changes no number. `param_sharding` (a NamedSharding per parameter,
  `pg.train.sharding.param_shardings`) keeps each run's parameters split over the mesh's
  "fsdp" axis through the updates (FSDP); None leaves them whole.
  """
  def constrain(tree, batch_axis=0):
    """Pins the batch axis of every leaf to the mesh's data axis (no-op without a mesh)."""
    if data_sharding is None:
      return tree
    spec = jax.sharding.PartitionSpec(*([None] * batch_axis), *data_sharding.spec)
    sharding = jax.sharding.NamedSharding(data_sharding.mesh, spec)
    return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)

  def constrain_params(params):
    """Pins each parameter to its FSDP split (no-op without one)."""
    if param_sharding is None:
      return params
    return jax.lax.with_sharding_constraint(params, param_sharding)

  T, G = task.max_new_tokens, config.group_size
  B = config.num_prompts * G
  share_prompts = shares_prompts(config, policy)
  use_ref = config.kl_placement != "none"
  advantage_fn = pg.get_advantage(config.advantage)
  forward, loss_fn = make_loss(config, policy, aggregation(config), share_prompts,
                               task.prompt_mask)
  use_lora = uses_lora(config)
  if not use_lora:
    gradient_step = make_gradient_step(config, loss_fn, constrain_params)
  start_params = None if use_lora else initial_params(config, policy)
  # Sampler–trainer mismatch (pg.core.rollout_correction): another compute dtype, stale params.
  stale = config.get("staleness", 0)
  sampler_policy = (with_compute_dtype(policy, config.sampler_dtype)
                    if config.get("sampler_dtype") else policy)
  correction = config.get("rollout_correction", "none")
  recompute = correction != "none" or config.get("off_policy_mask", False)
  mismatch = stale > 0 or sampler_policy is not policy

  def init(key, hp, start=start_params) -> TrainState:
    """A run's first state; `start` (default: the config's starting params, `init.start_params`)
    goes in whole or, for a pretrained checkpoint, under a fresh value head. The programs pass
    it as an argument, so a pretrained model's weights are not compiled in as constants. With
    config.lora, `start` is the frozen base (`lora_base`) and the run's params are fresh
    adapters on it."""
    init_key, run_key = jax.random.split(key)
    if use_lora:
      params = lora_lib.init_adapters(init_key, start, config.lora.targets, config.lora.rank)
    else:
      params = policy.init(init_key)
      if start is not None:
        params = policy.warm_start(params, start)
      params = constrain_params(params)
    opt_state = optimizer(hp, config.max_grad_norm).init(params)
    past = (jax.tree_util.tree_map(lambda x: jnp.repeat(x[None], stale, axis=0), params)
            if stale else None)
    return TrainState(params=params, ref_params=params if use_ref and not use_lora else None,
                      opt_state=opt_state, baseline_state=pg.init_baseline_state(),
                      key=run_key, step=jnp.zeros((), jnp.int32), hp=hp,
                      halted=jnp.zeros((), bool), past_params=past)

  init.start_params = start_params

  def policy_params(state: TrainState, params=None):
    """The variables the policy runs (`params`, default the state's): the run's own, or with
    LoRA the shared base under the run's adapters."""
    params = state.params if params is None else params
    return lora_lib.combine(state.base, params) if use_lora else params

  def reference_params(state: TrainState):
    """π_ref: the initial policy, or with LoRA the base alone (adapters off)."""
    return state.base if use_lora else state.ref_params

  oversample = config.get("oversample", 1)
  overlong = config.get("overlong_buffer", 0)

  def rollout(state: TrainState, prompt_key, sample_key):
    """Prompts, samples, scores (shaped) and the task's extra metrics of one update, with the
    batch-shaping metrics; with config.oversample = f > 1, f·num_prompts groups are drawn and
    num_prompts kept (`pg.core.shaping`)."""
    prompts_NxP = task.sample_prompts(prompt_key, config.num_prompts * oversample)
    prompts_BxP = constrain(jnp.repeat(prompts_NxP, G, axis=0))
    behaviour = policy_params(state, state.params if not stale else jax.tree_util.tree_map(
        lambda r: r[state.step % stale], state.past_params))
    s = constrain(sampler_lib.sample(
        sampler_policy, behaviour, prompts_NxP, sample_key, max_new_tokens=T, eos_id=task.eos_id,
        pad_id=task.pad_id, temperature=state.hp["temperature"], group_size=G,
        prompt_mask_NxP=task.prompt_mask(prompts_NxP), eos_ids=task.eos_ids,
        constrain=constrain if data_sharding is not None else None))
    scores_B, extra_B = task.score_and_extras(prompts_BxP, s.tokens_BxT, s.mask_BxT)
    shaped_B, penalty_B = shaped_scores(state, scores_B, s.mask_BxT)
    shape_metrics = {} if penalty_B is None else {"overlong_penalty": jnp.mean(penalty_B)}
    if oversample > 1:  # dynamic sampling: keep groups whose shaped scores differ
      chosen_N, kept_N = shaping.select_groups(shaped_B, G, config.num_prompts,
                                               jax.random.fold_in(sample_key, 7))
      shape_metrics["dynamic_informative_share"] = jnp.mean(
          shaping.informative_groups(shaped_B, G))
      shape_metrics["dynamic_kept_fraction"] = jnp.mean(kept_N)
      pick = lambda x: shaping.gather_groups(x, chosen_N, G)
      prompts_BxP, scores_B, shaped_B = pick(prompts_BxP), pick(scores_B), pick(shaped_B)
      s = jax.tree_util.tree_map(pick, s)
      extra_B = {k: pick(v) for k, v in extra_B.items()}
      # Too few informative groups: the rest stay in the batch's shape, masked out.
      s = s._replace(mask_BxT=s.mask_BxT * jnp.repeat(kept_N, G)[:, None])
      prompts_BxP, s = constrain(prompts_BxP), constrain(s)
    return prompts_BxP, s, scores_B, shaped_B, extra_B, shape_metrics

  def shaped_scores(state: TrainState, scores_B, mask_BxT):
    """(the reward the advantages see, DAPO's overlong penalty or None): the task's score plus
    the weighted penalty when config.overlong_buffer is set."""
    if not overlong:
      return scores_B, None
    penalty_B = shaping.overlong_penalty(jnp.sum(mask_BxT, axis=1), T, overlong)
    return scores_B + state.hp["overlong_penalty_factor"] * penalty_B, penalty_B

  def greedy_scores(state: TrainState, prompts_BxP):
    """Each row's prompt answered greedily and scored (ReMax's baseline), `[B]`."""
    prompts_NxP = prompts_BxP[::G]
    g = sampler_lib.sample(
        policy, policy_params(state), prompts_NxP, jax.random.PRNGKey(0), max_new_tokens=T,
        eos_id=task.eos_id, pad_id=task.pad_id, temperature=state.hp["temperature"],
        prompt_mask_NxP=task.prompt_mask(prompts_NxP), eos_ids=task.eos_ids, greedy=True)
    scores_N, _ = task.score_and_extras(prompts_NxP, g.tokens_BxT, g.mask_BxT)
    scores_N, _ = shaped_scores(state, scores_N, g.mask_BxT)  # the samples' reward
    return jax.lax.stop_gradient(jnp.repeat(scores_N, G))

  def advantage_inputs(state, prompts_BxP, scores_B, extra_B, mask, values_BxT, kl_reward):
    """The estimator's inputs, with what its registration says it needs."""
    baseline = greedy_scores(state, prompts_BxP) if advantage_fn.needs_greedy else None
    components = weights = None
    if advantage_fn.needs_components:
      names = [n for n, _ in task.component_weights]
      components = jnp.stack([jnp.asarray(extra_B[n], jnp.float32) for n in names])
      weights = jnp.asarray([w for _, w in task.component_weights], jnp.float32)
    return pg.AdvantageInputs(scores_B, mask, values_BxT, kl_reward, G, baseline_scores_B=baseline,
                              components_KxB=components, component_weights_K=weights)

  def training_batch(state: TrainState, prompts_BxP, s, scores_B, extra_B):
    """The gradient steps' batch (`pg.train.loss`), the advantage estimator's output and each
    row's KL to π_ref."""
    hp, mask = state.hp, s.mask_BxT
    trainer_logp = values_BxT = None
    if policy.has_values or mismatch or recompute:  # the trainer's own forward pass
      trainer_logp, _, values_BxT = forward(policy_params(state), prompts_BxP, s.tokens_BxT,
                                            hp["temperature"])
    # The behaviour log-probs PPO's ratio is taken against: the trainer's recompute when a
    # correction is on, else the sampler's ("bypass"). KL to π_ref is the trained policy's.
    own_logp = s.logp_BxT if trainer_logp is None or not mismatch else trainer_logp
    batch = {"prompts": prompts_BxP, "tokens": s.tokens_BxT, "mask": mask,
             "old_logp": trainer_logp if recompute else s.logp_BxT}
    kl_to_ref_B = jnp.zeros((B,), jnp.float32)
    kl_reward = None
    if use_ref:
      ref_logp_BxT, _, _ = forward(reference_params(state), prompts_BxP, s.tokens_BxT,
                                   hp["temperature"])
      batch["ref_logp"] = ref_logp_BxT
      kl_to_ref_B = pg.masked_sum(pg.kl_k1(own_logp, ref_logp_BxT), mask, axis=1)
      if config.kl_placement == "reward":
        kl_reward = pg.kl_estimate(own_logp, ref_logp_BxT, config.kl_estimator)
    adv = advantage_fn(advantage_inputs(state, prompts_BxP, scores_B, extra_B, mask, values_BxT,
                                        kl_reward), hp, state.baseline_state)
    advantages_BxT = adv.advantages_BxT
    if config.whiten_advantages:
      advantages_BxT = pg.masked_whiten(advantages_BxT, mask, eps=hp["adv_eps"])
    batch["advantages"] = advantages_BxT
    if config.get("mask_truncated", False):  # DAPO's overlong filtering: out of the loss
      batch["mask"] = mask * (1.0 - s.truncated_B.astype(jnp.float32))[:, None]
    if policy.has_values:
      batch["old_values"], batch["returns"] = values_BxT, adv.returns_BxT
    rc_metrics = {}
    if mismatch or recompute:
      weights, rejected = rc.correction_weights(correction, trainer_logp, s.logp_BxT, mask,
                                                hp["rc_cap"], hp["rc_low"], hp["rc_high"])
      if config.get("off_policy_mask", False):
        keep, dropped = rc.off_policy_sequence_mask(trainer_logp, s.logp_BxT, advantages_BxT,
                                                    mask, hp["opsm_delta"])
        weights, rejected = weights * keep, jnp.maximum(rejected, dropped)
      if recompute:
        batch["rc_weight"] = weights
      rc_metrics = rc.diagnostics(weights, rejected, trainer_logp, s.logp_BxT, mask)
    return constrain(jax.lax.stop_gradient(batch)), adv, kl_to_ref_B, rc_metrics

  def update(state: TrainState, _):
    key = jax.random.fold_in(state.key, state.step)
    prompt_key, sample_key, perm_key = jax.random.split(key, 3)
    prompts_BxP, s, scores_B, shaped_B, extra_B, shape_metrics = rollout(state, prompt_key,
                                                                         sample_key)
    batch, adv, kl_to_ref_B, rc_metrics = training_batch(state, prompts_BxP, s, shaped_B,
                                                         extra_B)
    # Keys for losses that draw (Clip-Cov); a fold of the permutation key, so every other
    # number of the update is unchanged.
    batch["loss_key"] = constrain(jax.random.split(jax.random.fold_in(perm_key, 2**31 - 1), B))
    step_fn = gradient_step if not use_lora else make_gradient_step(  # adapters only
        config, lambda adapters, mb, hp: loss_fn(policy_params(state, adapters), mb, hp))

    def epoch(carry, e):
      if share_prompts:  # one minibatch of whole groups, in order
        return jax.lax.scan(step_fn, carry,
                            constrain(jax.tree_util.tree_map(lambda x: x[None], batch), 1))
      perm_B = jax.random.permutation(jax.random.fold_in(perm_key, e), B)
      M = B // config.num_minibatches
      minibatches = constrain(jax.tree_util.tree_map(
          lambda x: x[perm_B].reshape(config.num_minibatches, M, *x.shape[1:]), batch), 1)
      return jax.lax.scan(step_fn, carry, minibatches)

    reward_ok = jnp.all(jnp.isfinite(scores_B))
    allowed = reward_ok & ~state.halted
    (params, opt_state, _, _), step_metrics = jax.lax.scan(
        epoch, (state.params, state.opt_state, state.hp, allowed),
        jnp.arange(config.ppo_epochs))
    metrics, bad = update_metrics(step_metrics, reward_ok, state.halted, scores_B, batch,
                                  kl_to_ref_B, s.truncated_B)
    metrics.update({k: jnp.mean(v) for k, v in extra_B.items()})
    metrics.update(rc_metrics)
    metrics.update(shape_metrics)
    baseline_state = jax.tree_util.tree_map(lambda n, o: jnp.where(allowed, n, o), adv.state,
                                            state.baseline_state)
    # on_nonfinite = "stop": a run that met a non-finite quantity stays at its last good
    # state for the rest of the chunk; the host then saves it and stops, naming the quantity.
    halted = state.halted | (bad & (config.get("on_nonfinite", "stop") == "stop"))
    if on_update is not None:  # after the update's metrics exist (a data dependency)
      jax.debug.callback(on_update, state.step, metrics["skipped"])
    past = state.past_params
    if stale:  # this update's starting params, read back `stale` updates from now
      past = jax.tree_util.tree_map(lambda r, p: r.at[state.step % stale].set(p), past,
                                    state.params)
    state = state.replace(params=params, opt_state=opt_state, baseline_state=baseline_state,
                          step=state.step + 1, halted=halted, past_params=past)
    return state, metrics

  def train_chunk(state: TrainState, base=None):
    """K updates; `base`: with LoRA, the frozen base (unbatched under the runs' vmap)."""
    state, metrics = jax.lax.scan(update, state.replace(base=base), None,
                                  length=config.updates_per_chunk)
    return state.replace(base=None), metrics

  return init, train_chunk


def make_gradient_step(config, loss_fn, constrain_params=lambda p: p):
  """`gradient_step((params, opt_state, hp, allowed), batch) -> (carry, metrics)`: the mean
  gradient of `config.grad_accum_steps` micro-batches, one optimizer update. A non-finite loss
  or gradient (or `allowed` False) leaves params and optimizer state as they were."""
  A = config.grad_accum_steps
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
    updates, new_opt_state = optimizer(hp, config.max_grad_norm).update(grads, opt_state, params)
    # A non-finite loss or gradient never reaches the parameters: the step is skipped.
    loss_ok, grad_ok = jnp.isfinite(metrics["loss"]), jnp.isfinite(grad_norm)
    take = allowed & loss_ok & grad_ok
    keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(take, n, o), new, old)
    metrics["nonfinite_loss"] = (~loss_ok).astype(jnp.float32)
    metrics["nonfinite_grad"] = (~grad_ok).astype(jnp.float32)
    return (constrain_params(keep(optax.apply_updates(params, updates), params)),
            keep(new_opt_state, opt_state), hp, allowed), metrics

  return gradient_step


def update_metrics(step_metrics, reward_ok, halted, scores_B, batch, kl_to_ref_B, truncated_B):
  """One update's metrics (gradient-step metrics averaged over epochs and minibatches) and
  whether a non-finite reward, loss or gradient met it."""
  metrics = jax.tree_util.tree_map(jnp.mean, step_metrics)
  nonfinite = {"nonfinite_reward": (~reward_ok).astype(jnp.float32),
               "nonfinite_loss": jnp.max(step_metrics["nonfinite_loss"]),
               "nonfinite_grad": jnp.max(step_metrics["nonfinite_grad"])}
  bad = (nonfinite["nonfinite_reward"] + nonfinite["nonfinite_loss"]
         + nonfinite["nonfinite_grad"]) > 0
  metrics.update(nonfinite)
  # 1 where this update's samples changed nothing (a non-finite quantity, or a halted run).
  metrics["skipped"] = (bad | halted).astype(jnp.float32)
  advantages_BxT, mask = batch["advantages"], batch["mask"]
  adv_sel = pg.masked_mean(advantages_BxT, mask)
  metrics.update({
      "mean_score": jnp.mean(scores_B),
      "advantage_mean": adv_sel,
      "advantage_std": jnp.sqrt(pg.masked_mean(jnp.square(advantages_BxT - adv_sel), mask)),
      "kl_to_ref": jnp.mean(kl_to_ref_B),
      "response_length": jnp.mean(jnp.sum(mask, axis=1)),
      "truncated_fraction": jnp.mean(truncated_B.astype(jnp.float32)),
  })
  return metrics, bad
