"""Score-function training on an enumerable problem, where every estimate meets the exact gradient.

A tabular policy over {0..V−1}^T (`pg.core.tabular`) is trained to maximise J(θ) = E[r(y)],
r = `pg.lab.problems.toy_reward`, with the registry's advantage estimators and policy loss,
PureJaxRL-style: `make_train(config)` returns a pure `train(key) -> metrics` whose updates run
under `lax.scan`, so a whole run compiles once and `jax.vmap` runs every seed together. Because
V^T is small, each step also logs the exact J(θ) and the cosine between the sampled gradient and
the exact ∇J. (Late in training that cosine is a poor guide: a near-deterministic policy makes
single estimates sparse, dominated by the rare off-path sample, though their mean stays on ∇J;
read it over the early updates.)
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pg
from pg.core import tabular
from pg.lab.problems import toy_reward


def validate(config) -> None:
  """Clear errors for a bad config, before anything compiles."""
  pg.get_advantage(config.advantage)
  pg.get_policy_loss(config.policy_loss)
  if config.aggregation not in pg.AGGREGATION_MODES:
    raise ValueError(f"config.aggregation {config.aggregation!r} is not one of "
                     f"{pg.AGGREGATION_MODES}.")
  for name in ("vocab_size", "length", "num_prompts", "group_size", "num_updates", "num_seeds"):
    if int(config[name]) < 1:
      raise ValueError(f"config.{name} must be >= 1, got {config[name]}.")
  if config.advantage == "rloo" and config.group_size < 2:
    raise ValueError("config.group_size must be >= 2 for advantage 'rloo' (leave-one-out).")
  if not 0 <= config.target_token < config.vocab_size:
    raise ValueError(f"config.target_token must lie in [0, {config.vocab_size}), "
                     f"got {config.target_token}.")
  tabular.all_sequences(config.vocab_size, config.length)  # raises if too many to enumerate


def make_train(config):
  """Returns `train(key, hp) -> metrics` with metrics of shape `[num_updates]` each."""
  validate(config)
  V, T = config.vocab_size, config.length
  B = config.num_prompts * config.group_size
  all_seqs = tabular.all_sequences(V, T)
  all_rewards = toy_reward(all_seqs, config.target_token)
  mask_BxT = jnp.ones((B, T), jnp.float32)
  advantage_fn = pg.get_advantage(config.advantage)
  policy_loss_fn = pg.get_policy_loss(config.policy_loss)

  def objective(theta):
    return tabular.exact_expectation(theta, all_seqs, all_rewards)

  def loss_fn(theta, tokens_BxT, advantages_BxT, hp):
    logits = tabular.logits(theta, tokens_BxT)
    logp_BxT = pg.token_log_probs(logits, tokens_BxT, temperature=hp["temperature"])
    inputs = pg.PolicyLossInputs(logp_BxT, jax.lax.stop_gradient(logp_BxT), advantages_BxT,
                                 mask_BxT)
    loss_BxT, _ = policy_loss_fn(inputs, hp)
    return pg.aggregate_loss(loss_BxT, mask_BxT, config.aggregation)

  def train(key, hp):
    optimizer = optax.adam(hp["learning_rate"])
    init_key, sample_key = jax.random.split(key)
    theta = tabular.init_params(init_key, V, T, scale=config.init_scale)
    carry = (theta, optimizer.init(theta), pg.init_baseline_state())

    def update(carry, step):
      theta, opt_state, baseline_state = carry
      tokens_BxT = tabular.sample(jax.random.fold_in(sample_key, step), theta, B, hp["temperature"])
      scores_B = toy_reward(tokens_BxT, config.target_token)
      adv = advantage_fn(pg.AdvantageInputs(scores_B, mask_BxT, group_size=config.group_size),
                         hp, baseline_state)
      loss, grad = jax.value_and_grad(loss_fn)(theta, tokens_BxT, adv.advantages_BxT, hp)
      exact_J, exact_grad = jax.value_and_grad(objective)(theta)
      cosine = -jnp.vdot(grad, exact_grad) / (
          jnp.linalg.norm(grad) * jnp.linalg.norm(exact_grad) + 1e-12)
      updates, opt_state = optimizer.update(grad, opt_state)
      theta = optax.apply_updates(theta, updates)
      metrics = {"exact_J": exact_J, "mean_score": jnp.mean(scores_B), "loss": loss,
                 "grad_cosine_to_exact": cosine}
      return (theta, opt_state, adv.state), metrics

    _, metrics = jax.lax.scan(update, carry, jnp.arange(config.num_updates))
    return metrics

  return train


def run(config, hp):
  """All seeds of one config in one compiled program: metrics `[num_seeds, num_updates]`."""
  train = make_train(config)
  keys = jax.random.split(jax.random.PRNGKey(config.seed), config.num_seeds)
  return jax.jit(jax.vmap(train, in_axes=(0, None)))(keys, hp)


def run_every_estimator(config, log=None) -> dict:
  """Each estimator of `config.advantages` (all validated before any runs), trained with the
  config's hyperparameters: {name: {metric: NumPy `[num_seeds, num_updates]`}}. `log(name,
  seconds)` is called after each (compile included). Sets `config.advantage` as it goes."""
  hp = pg.make_hparams(learning_rate=config.learning_rate, temperature=config.temperature,
                       baseline_decay=config.baseline_decay)
  for name in config.advantages:
    with config.unlocked():
      config.advantage = name
    validate(config)
  results = {}
  for name in config.advantages:
    with config.unlocked():
      config.advantage = name
    start = time.time()
    results[name] = {k: np.asarray(v) for k, v in run(config, hp).items()}
    if log is not None:
      log(name, time.time() - start)
  return results


def max_objective(config) -> float:
  """max_y r(y): the best J any policy can reach."""
  seqs = tabular.all_sequences(config.vocab_size, config.length)
  return float(jnp.max(toy_reward(seqs, config.target_token)))
