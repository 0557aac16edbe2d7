"""Supervised stages on a policy (any `pg.policy.Policy`): next-token pretraining (π_ref) and a
Bradley–Terry reward model on its value head, each a jitted optax step driven by a short loop
with a progress bar."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

import pg


def next_token_loss(params, policy, tokens_BxL):
  """Mean −log π(x_{t+1} | x_≤t) over the window (float32 log-probs)."""
  logits_BxLxV, _ = policy.sequence_outputs(params, tokens_BxL)
  logp_BxT = pg.token_log_probs(logits_BxLxV[:, :-1], tokens_BxL[:, 1:])
  return -jnp.mean(logp_BxT)


def bradley_terry_loss(reward_chosen_B, reward_rejected_B):
  """−log σ(r_chosen − r_rejected), mean over pairs; its gradient on r_chosen is −σ(r_rej − r_ch)."""
  return -jnp.mean(jax.nn.log_sigmoid(reward_chosen_B - reward_rejected_B))


def bradley_terry_labels(gold_Nx2, temperature: float, rng: np.random.Generator):
  """Which response of each pair a Bradley–Terry labeller prefers: True where the first wins,
  drawn with P(first ≻ second) = σ((g_first − g_second) / temperature). Returns (wins_N, p_N)."""
  gold_Nx2 = np.asarray(gold_Nx2, np.float64)
  if gold_Nx2.ndim != 2 or gold_Nx2.shape[1] != 2:
    raise ValueError(f"bradley_terry_labels: gold_Nx2 must be [N, 2], got {gold_Nx2.shape}.")
  if not temperature > 0:
    raise ValueError(f"bradley_terry_labels: temperature must be > 0, got {temperature}.")
  p_N = 1.0 / (1.0 + np.exp(-(gold_Nx2[:, 0] - gold_Nx2[:, 1]) / temperature))
  return rng.random(len(p_N)) < p_N, p_N


def sequence_reward(params, policy, tokens_BxL, last_B, mask_BxL=None, pool_from=None):
  """A scalar per sequence from the value head: its output at each row's last token (index
  `last_B`), or with `pool_from` = P (static) its mean over positions P..last_B, the response's
  tokens (a linear head on the mean-pooled hidden states). `mask_BxL`: 1 on real tokens of
  left-padded rows (None: all real)."""
  if mask_BxL is None:
    _, values_BxL = policy.sequence_outputs(params, tokens_BxL)
  else:
    _, values_BxL = policy.sequence_outputs(params, tokens_BxL, mask_BxL)
  if pool_from is None:
    return jnp.take_along_axis(values_BxL, last_B[:, None], axis=1)[:, 0]
  pos_L = jnp.arange(values_BxL.shape[1])
  inside_BxL = ((pos_L[None] >= pool_from) & (pos_L[None] <= last_B[:, None])).astype(jnp.float32)
  return jnp.sum(values_BxL * inside_BxL, axis=1) / jnp.maximum(jnp.sum(inside_BxL, axis=1), 1.0)


def last_index(mask_BxT, prompt_len: int):
  """Index, in prompt ⧺ response, of each row's last generated token."""
  return prompt_len - 1 + jnp.sum(mask_BxT, axis=1).astype(jnp.int32)


def fit(loss_fn, params, batches, *, learning_rate, steps, key, desc, verbose=True,
        weight_decay=0.01, trainable=None):
  """AdamW on `loss_fn(params, batch)` for `steps` steps over random minibatches drawn by
  `batches(key) -> batch`; returns params and the loss per step. `trainable`: a pytree of bools
  like `params` (None: all); the other leaves are neither updated nor decayed."""
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(learning_rate, weight_decay=weight_decay))
  if trainable is not None:
    labels = jax.tree_util.tree_map(lambda t: "train" if t else "freeze", trainable)
    tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, batches(key))
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  bar = tqdm(range(steps), desc=desc, unit="step", disable=not verbose)
  for i in bar:
    params, opt_state, loss = step(params, opt_state, jax.random.fold_in(key, i))
    if i % 20 == 0 or i == steps - 1:
      loss = float(loss)
      if not np.isfinite(loss):
        raise FloatingPointError(f"{desc}: the loss is {loss} at step {i}.")
      bar.set_postfix(loss=f"{loss:.3f}")
    losses.append(loss)
  return params, np.asarray([float(x) for x in losses])


def pretrain(policy, windows_NxL, *, steps, batch_size, learning_rate, key, verbose=True):
  """Next-token cross-entropy on random windows: the reference policy π_ref."""
  data = jnp.asarray(windows_NxL)
  init_key, key = jax.random.split(key)
  params = policy.init(init_key)

  def batches(k):
    return data[jax.random.randint(k, (batch_size,), 0, data.shape[0])]
  return fit(lambda p, x: next_token_loss(p, policy, x), params, batches,
             learning_rate=learning_rate, steps=steps, key=key, desc="pretrain π_ref",
             verbose=verbose)


def head_only(params):
  """A `trainable` tree for `fit`: True on the value head's leaves (`value_out`), else False."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: any(getattr(k, "key", None) == "value_out" for k in path), params)


def train_reward_model(policy, chosen_NxL, rejected_NxL, chosen_last_N,
                       rejected_last_N, *, steps, batch_size, learning_rate, key, init=None,
                       verbose=True, chosen_mask_NxL=None, rejected_mask_NxL=None,
                       pool_from=None, train_head_only=False):
  """Bradley–Terry on preference pairs; `init` (e.g. π_ref's params) warm-starts the trunk.
  The masks (1 on real tokens) are for left-padded prompts; None: every token real.
  `pool_from`: see `sequence_reward`. `train_head_only`: the trunk stays as `init` gave it."""
  masks = (chosen_mask_NxL, rejected_mask_NxL)
  if masks[0] is None:
    masks = tuple(np.ones(np.shape(x), np.float32) for x in (chosen_NxL, rejected_NxL))
  data = tuple(jnp.asarray(x) for x in (chosen_NxL, rejected_NxL, chosen_last_N,
                                         rejected_last_N, *masks))
  init_key, key = jax.random.split(key)
  params = policy.init(init_key)
  if init is not None:  # the trunk from `init`; the value head stays fresh
    params = policy.warm_start(params, init)

  def batches(k):
    i = jax.random.randint(k, (batch_size,), 0, data[0].shape[0])
    return tuple(x[i] for x in data)

  masked = chosen_mask_NxL is not None

  trainable = head_only(params) if train_head_only else None

  def loss_fn(p, batch):
    if trainable is not None:  # no gradient through the frozen trunk
      p = jax.tree_util.tree_map(lambda x, t: x if t else jax.lax.stop_gradient(x), p, trainable)
    ch, rj, ch_last, rj_last, ch_mask, rj_mask = batch
    reward = lambda x, last, m: sequence_reward(p, policy, x, last, m if masked else None,
                                                pool_from)
    return bradley_terry_loss(reward(ch, ch_last, ch_mask), reward(rj, rj_last, rj_mask))
  return fit(loss_fn, params, batches, learning_rate=learning_rate, steps=steps, key=key,
             desc="reward model", verbose=verbose, trainable=trainable)
