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


def sequence_reward(params, policy, tokens_BxL, last_B, mask_BxL=None):
  """The value head's output at each row's last token (index `last_B`): a scalar per sequence.
  `mask_BxL`: 1 on real tokens of left-padded rows (None: all real)."""
  if mask_BxL is None:
    _, values_BxL = policy.sequence_outputs(params, tokens_BxL)
  else:
    _, values_BxL = policy.sequence_outputs(params, tokens_BxL, mask_BxL)
  return jnp.take_along_axis(values_BxL, last_B[:, None], axis=1)[:, 0]


def last_index(mask_BxT, prompt_len: int):
  """Index, in prompt ⧺ response, of each row's last generated token."""
  return prompt_len - 1 + jnp.sum(mask_BxT, axis=1).astype(jnp.int32)


def fit(loss_fn, params, batches, *, learning_rate, steps, key, desc, verbose=True,
        weight_decay=0.01):
  """AdamW on `loss_fn(params, batch)` for `steps` steps over random minibatches drawn by
  `batches(key) -> batch`; returns params and the loss per step."""
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(learning_rate, weight_decay=weight_decay))
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


def train_reward_model(policy, chosen_NxL, rejected_NxL, chosen_last_N,
                       rejected_last_N, *, steps, batch_size, learning_rate, key, init=None,
                       verbose=True, chosen_mask_NxL=None, rejected_mask_NxL=None):
  """Bradley–Terry on preference pairs; `init` (e.g. π_ref's params) warm-starts the trunk.
  The masks (1 on real tokens) are for left-padded prompts; None: every token real."""
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

  def loss_fn(p, batch):
    ch, rj, ch_last, rj_last, ch_mask, rj_mask = batch
    return bradley_terry_loss(sequence_reward(p, policy, ch, ch_last, ch_mask if masked else None),
                              sequence_reward(p, policy, rj, rj_last, rj_mask if masked else None))
  return fit(loss_fn, params, batches, learning_rate=learning_rate, steps=steps, key=key,
             desc="reward model", verbose=verbose)
