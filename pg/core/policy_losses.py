"""Policy-gradient surrogates, PPO clipping, the value loss and the entropy bonus, per token.

Each function returns a loss to *minimise*; advantages are constants (stop-gradient). Losses
are per token `[B, T]`, 0 on masked tokens: `pg.aggregation` turns them into a scalar.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pg.core import _checks
from pg.core import kl
from pg.core.kl import LOG_RATIO_CLAMP
from pg.core.masked import masked_mean
from pg.core.registry import PolicyLossInputs, register_policy_loss


def reinforce_sequence_surrogate(seq_logp_B, advantages_B):
  """ℓ = −sg(A)·log π(y), `[B]`; ∇ℓ = −A ∇ log π(y) (the score-function estimator)."""
  _checks.rank("reinforce_sequence_surrogate", "seq_logp_B", seq_logp_B, 1)
  _checks.same_shape("reinforce_sequence_surrogate",
                     {"seq_logp_B": seq_logp_B, "advantages_B": advantages_B})
  return -jax.lax.stop_gradient(jnp.asarray(advantages_B, jnp.float32)) * seq_logp_B


def reinforce_token_surrogate(logp_BxT, advantages_BxT, mask_BxT):
  """ℓ_t = −sg(A_t)·log π(y_t | y_<t)·m_t, `[B, T]`; summed over t with A_t = A it is the
  sequence-level surrogate, and with per-token A_t (return-to-go) it assigns credit per token."""
  fn = "reinforce_token_surrogate"
  _checks.rank(fn, "logp_BxT", logp_BxT, 2)
  _checks.same_shape(fn, {"logp_BxT": logp_BxT, "advantages_BxT": advantages_BxT,
                          "mask_BxT": mask_BxT})
  adv_BxT = jax.lax.stop_gradient(jnp.asarray(advantages_BxT, jnp.float32))
  return -adv_BxT * logp_BxT * mask_BxT


def ppo_clipped_surrogate(logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT,
                          eps_low=0.2, eps_high=0.2, dual_clip=0.0):
  """PPO's clipped surrogate with asymmetric range and optional dual clip (Ye et al., 2020).

      ρ_t = exp(clamp(log π_θ − log π_old, ±20))
      ℓ_t = max(−A_t ρ_t, −A_t clip(ρ_t, 1 − ε_low, 1 + ε_high))
      dual clip, for A_t < 0 and c > 1:  ℓ_t = min(ℓ_t, −c·A_t)

  `dual_clip` ≤ 1 (default 0) turns the dual clip off; it is a value, so it may be traced.
  Returns (loss_BxT, clipped_BxT): clipped_BxT is 1.0 where the clipped branch was taken.
  """
  fn = "ppo_clipped_surrogate"
  _checks.loss_arrays(fn, logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT)
  _checks.in_range(fn, "eps_low", eps_low, 0.0, 1.0, hi_open=True)
  _checks.in_range(fn, "eps_high", eps_high, 0.0, float("inf"), hi_open=True)
  _checks.in_range(fn, "dual_clip", dual_clip, 0.0, float("inf"), hi_open=True)
  adv = jax.lax.stop_gradient(jnp.asarray(advantages_BxT, jnp.float32))
  log_ratio = jnp.clip(logp_BxT - jax.lax.stop_gradient(old_logp_BxT),
                       -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  ratio = jnp.exp(log_ratio)
  unclipped = -adv * ratio
  clipped = -adv * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
  loss = jnp.maximum(unclipped, clipped)
  took_clip = clipped > unclipped
  use_dual = (dual_clip > 1.0) & (adv < 0)
  dual_bound = -dual_clip * adv
  took_dual = use_dual & (loss > dual_bound)
  loss = jnp.where(took_dual, dual_bound, loss)
  clipped_BxT = (took_clip | took_dual).astype(jnp.float32) * mask_BxT
  return loss * mask_BxT, clipped_BxT


def clipped_value_loss(values_BxT, old_values_BxT, returns_BxT, mask_BxT, clip=0.2):
  """½·max((V − G)², (clip(V, V_old ± c) − G)²) per token, `[B, T]`."""
  fn = "clipped_value_loss"
  _checks.rank(fn, "values_BxT", values_BxT, 2)
  _checks.same_shape(fn, {"values_BxT": values_BxT, "old_values_BxT": old_values_BxT,
                          "returns_BxT": returns_BxT, "mask_BxT": mask_BxT})
  _checks.in_range(fn, "clip", clip, 0.0, float("inf"), lo_open=True, hi_open=True)
  old = jax.lax.stop_gradient(old_values_BxT)
  target = jax.lax.stop_gradient(returns_BxT)
  v_clipped = old + jnp.clip(values_BxT - old, -clip, clip)
  loss = 0.5 * jnp.maximum(jnp.square(values_BxT - target), jnp.square(v_clipped - target))
  return loss * mask_BxT


def entropy_bonus(entropy_BxT, mask_BxT):
  """ℓ_t = −H_t·m_t: adding coef·ℓ to the loss rewards entropy."""
  _checks.same_shape("entropy_bonus", {"entropy_BxT": entropy_BxT, "mask_BxT": mask_BxT})
  return -entropy_BxT * mask_BxT


# Registered policy losses: fn(inputs: PolicyLossInputs, hp) -> (loss_BxT, metrics).

def ratio_metrics(inputs: PolicyLossInputs):
  """KL to the behaviour policy (k3) and the mean ratio ρ, both from clamped log-ratios."""
  logp_BxT = jax.lax.stop_gradient(inputs.logp_BxT)
  log_ratio_BxT = kl.log_ratio(logp_BxT, inputs.old_logp_BxT)
  return {"approx_kl_old": masked_mean(kl.kl_k3(logp_BxT, inputs.old_logp_BxT), inputs.mask_BxT),
          "ratio_mean": masked_mean(jnp.exp(log_ratio_BxT), inputs.mask_BxT)}


def loss_metrics(inputs: PolicyLossInputs, clipped_BxT=None):
  """`ratio_metrics` and `clip_fraction`, the share of generated tokens a loss clipped, masked
  or detached (`clipped_BxT`, 1.0 there; None: 0)."""
  fraction = (jnp.zeros((), jnp.float32) if clipped_BxT is None
              else masked_mean(clipped_BxT, inputs.mask_BxT))
  return {**ratio_metrics(inputs), "clip_fraction": fraction}


@register_policy_loss("reinforce")
def reinforce_loss(inputs: PolicyLossInputs, hp):
  """On-policy score-function loss −sg(A_t)·log π(y_t | y_<t); ignores `old_logp_BxT`."""
  del hp
  inputs.check("reinforce")
  loss = reinforce_token_surrogate(inputs.logp_BxT, inputs.advantages_BxT, inputs.mask_BxT)
  return loss, loss_metrics(inputs)


@register_policy_loss("ppo")
def ppo_loss(inputs: PolicyLossInputs, hp):
  """Clipped surrogate with hp['ppo_eps_low'], hp['ppo_eps_high'], hp['dual_clip']."""
  inputs.check("ppo")
  loss, clipped = ppo_clipped_surrogate(
      inputs.logp_BxT, inputs.old_logp_BxT, inputs.advantages_BxT, inputs.mask_BxT,
      hp["ppo_eps_low"], hp["ppo_eps_high"], hp["dual_clip"])
  return loss, loss_metrics(inputs, clipped)
