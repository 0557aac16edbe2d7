"""Clip-Cov and KL-Cov (Cui et al., 2025, "The Entropy Mechanism of Reinforcement Learning for
Reasoning Language Models"): entropy collapses through the few tokens whose log-probability
and advantage covary most, so these losses restrain only those tokens.

Over the batch's generated tokens, with sg(·) stop-gradient and means over those tokens,

    Cov_t = (A_t − mean A)·(sg(log π_t) − mean sg(log π))

    Clip-Cov  PPO's clipped surrogate, except that r·N tokens drawn at random among those PPO
              did not clip with ω_low < Cov_t < ω_high lose their gradient (loss 0 there);
              N the number of generated tokens, at least one drawn.
    KL-Cov    the unclipped surrogate −A_t ρ_t, plus coef·|log π_t − log π_old| on the k = r·N
              tokens of largest Cov_t (at least one).

The counts are traced (a sort and a rank, no data-dependent shapes), so r and the bounds are
swept values. Defaults are verl's: r = 2e-4, ω ∈ (1, 5), coef = 1. Clip-Cov's draw uses
`PolicyLossInputs.key` (the train step passes one per minibatch; None: a fixed key).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pg.core import _checks
from pg.core.kl import log_ratio
from pg.core.masked import masked_mean
from pg.core.policy_losses import loss_metrics
from pg.core.registry import PolicyLossInputs, register_policy_loss

INF = float("inf")


def token_covariance(logp_BxT, advantages_BxT, mask_BxT):
  """Cov_t = (A_t − mean A)(log π_t − mean log π) over generated tokens, `[B, T]`, no gradient
  (0 on masked tokens)."""
  m = jnp.asarray(mask_BxT, jnp.float32)
  a = jax.lax.stop_gradient(jnp.asarray(advantages_BxT, jnp.float32))
  lp = jax.lax.stop_gradient(jnp.asarray(logp_BxT, jnp.float32))
  return (a - masked_mean(a, m)) * (lp - masked_mean(lp, m)) * m


def _rank(priority_BxT):
  """Each entry's rank (0 = smallest) in the flattened array, `[B, T]` int32."""
  flat = priority_BxT.reshape(-1)
  order = jnp.argsort(flat)
  return jnp.zeros_like(order).at[order].set(jnp.arange(flat.shape[0])).reshape(
      priority_BxT.shape)


def _count(ratio, mask_BxT):
  """max(⌊r·N⌋, 1), N the number of generated tokens."""
  return jnp.maximum(jnp.floor(ratio * jnp.sum(mask_BxT)), 1.0)


def clip_cov_surrogate(logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT, key=None,
                       clip_ratio=2e-4, cov_low=1.0, cov_high=5.0, eps_low=0.2, eps_high=0.2):
  """Clip-Cov's loss `[B, T]` and detached_BxT (1.0 on the tokens drawn). Arguments as PPO's:
  log-probs of the sampled tokens t ∈ [0, T) of rows b ∈ [0, B); `key` for the draw."""
  fn = "clip_cov_surrogate"
  _checks.loss_arrays(fn, logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT)
  _checks.in_range(fn, "clip_ratio", clip_ratio, 0.0, 1.0, lo_open=True)
  m = jnp.asarray(mask_BxT, jnp.float32)
  adv = jax.lax.stop_gradient(jnp.asarray(advantages_BxT, jnp.float32))
  ratio = jnp.exp(log_ratio(logp_BxT, jax.lax.stop_gradient(old_logp_BxT)))
  unclipped = -adv * ratio
  clipped = -adv * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
  ppo_clipped = (clipped > unclipped) & (m > 0)
  cov = token_covariance(logp_BxT, adv, m)
  candidate = (m > 0) & ~ppo_clipped & (cov > cov_low) & (cov < cov_high)
  key = jax.random.PRNGKey(0) if key is None else key
  priority = jnp.where(candidate, jax.random.uniform(key, m.shape), 2.0)
  drawn = candidate & (_rank(priority) < _count(clip_ratio, m))
  keep = 1.0 - drawn.astype(jnp.float32)
  return jnp.maximum(unclipped, clipped) * keep * m, drawn.astype(jnp.float32)


def kl_cov_surrogate(logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT, kl_ratio=2e-4,
                     kl_coef=1.0):
  """KL-Cov's loss `[B, T]` and penalised_BxT (1.0 on the top-k covariance tokens)."""
  fn = "kl_cov_surrogate"
  _checks.loss_arrays(fn, logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT)
  _checks.in_range(fn, "kl_ratio", kl_ratio, 0.0, 1.0, lo_open=True)
  m = jnp.asarray(mask_BxT, jnp.float32)
  adv = jax.lax.stop_gradient(jnp.asarray(advantages_BxT, jnp.float32))
  delta = log_ratio(logp_BxT, jax.lax.stop_gradient(old_logp_BxT))
  cov = token_covariance(logp_BxT, adv, m)
  top = (m > 0) & (_rank(jnp.where(m > 0, -cov, INF)) < _count(kl_ratio, m))
  # |δ| with the subgradient 0 at δ = 0 (as torch's abs), so at ρ = 1 KL-Cov is REINFORCE.
  abs_delta = delta * jnp.sign(jax.lax.stop_gradient(delta))
  loss = -adv * jnp.exp(delta) + jnp.where(top, kl_coef * abs_delta, 0.0)
  return loss * m, top.astype(jnp.float32)


@register_policy_loss("clip_cov", hparams={
    "clip_cov_ratio": (2e-4, 0.0, 1.0, True, False, "Clip-Cov share r of tokens detached"),
    "clip_cov_low": (1.0, -INF, INF, True, True, "Clip-Cov covariance lower bound ω_low"),
    "clip_cov_high": (5.0, -INF, INF, True, True, "Clip-Cov covariance upper bound ω_high"),
})
def clip_cov_loss(inputs: PolicyLossInputs, hp):
  """Clip-Cov: PPO's surrogate with a random few high-covariance tokens detached
  (clip ranges: hp["ppo_eps_low"], hp["ppo_eps_high"])."""
  inputs.check("clip_cov")
  loss, drawn = clip_cov_surrogate(inputs.logp_BxT, inputs.old_logp_BxT, inputs.advantages_BxT,
                                   inputs.mask_BxT, inputs.key, hp["clip_cov_ratio"],
                                   hp["clip_cov_low"], hp["clip_cov_high"], hp["ppo_eps_low"],
                                   hp["ppo_eps_high"])
  return loss, loss_metrics(inputs, drawn)


@register_policy_loss("kl_cov", hparams={
    "kl_cov_ratio": (2e-4, 0.0, 1.0, True, False, "KL-Cov share k of tokens penalised"),
    "kl_cov_coef": (1.0, 0.0, INF, False, True, "KL-Cov coefficient of |log π − log π_old|"),
})
def kl_cov_loss(inputs: PolicyLossInputs, hp):
  """KL-Cov: the unclipped surrogate with |log-ratio| penalised on the top-k covariance tokens."""
  inputs.check("kl_cov")
  loss, top = kl_cov_surrogate(inputs.logp_BxT, inputs.old_logp_BxT, inputs.advantages_BxT,
                               inputs.mask_BxT, hp["kl_cov_ratio"], hp["kl_cov_coef"])
  return loss, loss_metrics(inputs, top)
