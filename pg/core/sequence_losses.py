"""Sequence-level importance ratios: GSPO (sequence and token forms) and GMPO.

PPO clips each token's ratio ρ_t = π_θ(y_t | y_<t) / π_old(y_t | y_<t); these losses clip one
ratio per response, the geometric mean of its token ratios, so a response moves as a whole.
With δ_t = clamp(log π_θ − log π_old, ±20) and |y| the number of generated tokens:

    GSPO (Zheng et al., 2025, "Group Sequence Policy Optimization", eq. 5–7)
      s = exp((1/|y|) Σ_t δ_t),   ℓ = max(−A s, −A clip(s, 1 − ε_low, 1 + ε_high))
    GSPO-token (ibid., eq. 13): s_t = sg(s)·π_θ(y_t)/sg(π_θ(y_t)), whose value is s and whose
      gradient is s ∇log π_θ(y_t); ℓ_t = max(−A_t s_t, −A_t clip(s_t, ...)). With one
      advantage per response it equals GSPO in value and gradient; it also takes per-token A_t.
    GMPO (Zhao et al., 2025, "Geometric-Mean Policy Optimization"): each δ_t clipped in log
      space on the side the advantage pushes, δ̃_t = sgn(A)·min(sgn(A) δ_t, sgn(A) clip(δ_t,
      −ε_low, ε_high)), r = exp((1/|y|) Σ_t δ̃_t), ℓ = −A r.

A is the response's advantage, the token mean of `advantages_BxT` (the advantage itself for a
sequence-level estimator). The sequence forms write ℓ on every generated token of the row, so
with their registered aggregation, "seq-mean-token-mean", the batch loss is mean_b ℓ_b. Clip
ranges are GSPO's published 3e-4 / 4e-4 and GMPO's 0.4 (ratios in (e^−0.4, e^0.4)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pg.core import _checks
from pg.core.kl import log_ratio
from pg.core.policy_losses import loss_metrics
from pg.core.registry import PolicyLossInputs, register_policy_loss

INF = float("inf")


def sequence_mean(x_BxT, mask_BxT):
  """(1/|y_b|) Σ_t x_bt m_bt, `[B]`; 0 for a row without generated tokens."""
  m = jnp.asarray(mask_BxT, jnp.float32)
  return jnp.sum(x_BxT * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)


def sequence_advantage(advantages_BxT, mask_BxT):
  """A_b = token mean of the (constant) advantages, `[B]`, no gradient."""
  return jax.lax.stop_gradient(sequence_mean(jnp.asarray(advantages_BxT, jnp.float32), mask_BxT))


def gspo_sequence_ratio(logp_BxT, old_logp_BxT, mask_BxT):
  """s_b = exp((1/|y_b|) Σ_t clamp(log π_θ − log π_old, ±20)), `[B]`, differentiable in logp."""
  delta_BxT = log_ratio(logp_BxT, jax.lax.stop_gradient(old_logp_BxT))
  return jnp.exp(sequence_mean(delta_BxT, mask_BxT))


def gspo_surrogate(logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT, eps_low=3e-4,
                   eps_high=4e-4):
  """GSPO's sequence-form loss, `[B, T]` (ℓ_b on each generated token) and clipped_BxT.

  logp_BxT: log π_θ(y_t | y_<t), t ∈ [0, T), b ∈ [0, B); old_logp_BxT: the behaviour policy's;
  advantages_BxT: A_t (their token mean is the response's A); mask_BxT: 1.0 on generated tokens.
  """
  fn = "gspo_surrogate"
  _checks.loss_arrays(fn, logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT)
  _checks.in_range(fn, "eps_low", eps_low, 0.0, 1.0, hi_open=True)
  _checks.in_range(fn, "eps_high", eps_high, 0.0, INF, hi_open=True)
  m = jnp.asarray(mask_BxT, jnp.float32)
  adv_B = sequence_advantage(advantages_BxT, m)
  s_B = gspo_sequence_ratio(logp_BxT, old_logp_BxT, m)
  unclipped_B = -adv_B * s_B
  clipped_B = -adv_B * jnp.clip(s_B, 1.0 - eps_low, 1.0 + eps_high)
  loss_B = jnp.maximum(unclipped_B, clipped_B)
  took_clip_B = (clipped_B > unclipped_B).astype(jnp.float32)
  return loss_B[:, None] * m, took_clip_B[:, None] * m


def gspo_token_surrogate(logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT, eps_low=3e-4,
                         eps_high=4e-4):
  """GSPO-token: s_t = sg(s)·exp(log π_t − sg(log π_t)) clipped per token with A_t, `[B, T]`.

  Same arguments as `gspo_surrogate`; returns (loss_BxT, clipped_BxT)."""
  fn = "gspo_token_surrogate"
  _checks.loss_arrays(fn, logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT)
  _checks.in_range(fn, "eps_low", eps_low, 0.0, 1.0, hi_open=True)
  _checks.in_range(fn, "eps_high", eps_high, 0.0, INF, hi_open=True)
  m = jnp.asarray(mask_BxT, jnp.float32)
  adv_BxT = jax.lax.stop_gradient(jnp.asarray(advantages_BxT, jnp.float32))
  log_s_B = jax.lax.stop_gradient(jnp.log(gspo_sequence_ratio(logp_BxT, old_logp_BxT, m)))
  s_BxT = jnp.exp(log_s_B[:, None] + logp_BxT - jax.lax.stop_gradient(logp_BxT))
  unclipped = -adv_BxT * s_BxT
  clipped = -adv_BxT * jnp.clip(s_BxT, 1.0 - eps_low, 1.0 + eps_high)
  loss = jnp.maximum(unclipped, clipped)
  return loss * m, (clipped > unclipped).astype(jnp.float32) * m


def gmpo_surrogate(logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT, eps_low=0.4,
                   eps_high=0.4):
  """GMPO's loss, `[B, T]` (ℓ_b = −A_b r_b on each generated token), and clipped_BxT (1.0 where
  a token's log-ratio was clipped on the side its advantage pushes). Arguments as
  `gspo_surrogate`; ε's are log-space bounds."""
  fn = "gmpo_surrogate"
  _checks.loss_arrays(fn, logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT)
  _checks.in_range(fn, "eps_low", eps_low, 0.0, INF, hi_open=True)
  _checks.in_range(fn, "eps_high", eps_high, 0.0, INF, hi_open=True)
  m = jnp.asarray(mask_BxT, jnp.float32)
  adv_BxT = jax.lax.stop_gradient(jnp.asarray(advantages_BxT, jnp.float32))
  sign_BxT = jnp.sign(adv_BxT)
  delta_BxT = log_ratio(logp_BxT, jax.lax.stop_gradient(old_logp_BxT))
  clamped_BxT = jnp.clip(delta_BxT, -eps_low, eps_high)
  kept_BxT = sign_BxT * jnp.minimum(sign_BxT * delta_BxT, sign_BxT * clamped_BxT)
  r_B = jnp.exp(sequence_mean(kept_BxT, m))
  loss_B = -sequence_advantage(adv_BxT, m) * r_B
  clipped_BxT = (sign_BxT * clamped_BxT < sign_BxT * delta_BxT).astype(jnp.float32) * m
  return loss_B[:, None] * m, clipped_BxT


def _metrics(inputs: PolicyLossInputs, clipped_BxT, seq_ratio_B=None):
  out = loss_metrics(inputs, clipped_BxT)
  if seq_ratio_B is not None:
    out["seq_ratio_mean"] = jnp.mean(jax.lax.stop_gradient(seq_ratio_B))
  return out


_GSPO_HPARAMS = {
    "gspo_eps_low": (3e-4, 0.0, 1.0, False, True, "GSPO clip range of s below 1"),
    "gspo_eps_high": (4e-4, 0.0, INF, False, True, "GSPO clip range of s above 1"),
}


@register_policy_loss("gspo", hparams=_GSPO_HPARAMS, aggregation="seq-mean-token-mean")
def gspo_loss(inputs: PolicyLossInputs, hp):
  """GSPO, sequence form: the clipped sequence ratio s times the response's advantage."""
  inputs.check("gspo")
  loss, clipped = gspo_surrogate(inputs.logp_BxT, inputs.old_logp_BxT, inputs.advantages_BxT,
                                 inputs.mask_BxT, hp["gspo_eps_low"], hp["gspo_eps_high"])
  s_B = gspo_sequence_ratio(inputs.logp_BxT, inputs.old_logp_BxT, inputs.mask_BxT)
  return loss, _metrics(inputs, clipped, s_B)


@register_policy_loss("gspo_token", hparams=_GSPO_HPARAMS, aggregation="seq-mean-token-mean")
def gspo_token_loss(inputs: PolicyLossInputs, hp):
  """GSPO-token: value s, gradient s ∇log π_t, per-token advantages allowed."""
  inputs.check("gspo_token")
  loss, clipped = gspo_token_surrogate(inputs.logp_BxT, inputs.old_logp_BxT,
                                       inputs.advantages_BxT, inputs.mask_BxT,
                                       hp["gspo_eps_low"], hp["gspo_eps_high"])
  s_B = gspo_sequence_ratio(inputs.logp_BxT, inputs.old_logp_BxT, inputs.mask_BxT)
  return loss, _metrics(inputs, clipped, s_B)


@register_policy_loss("gmpo", aggregation="seq-mean-token-mean", hparams={
    "gmpo_eps_low": (0.4, 0.0, INF, False, True, "GMPO log-ratio clip below 0"),
    "gmpo_eps_high": (0.4, 0.0, INF, False, True, "GMPO log-ratio clip above 0"),
})
def gmpo_loss(inputs: PolicyLossInputs, hp):
  """GMPO: the geometric mean of token ratios, each clipped in log space."""
  inputs.check("gmpo")
  loss, clipped = gmpo_surrogate(inputs.logp_BxT, inputs.old_logp_BxT, inputs.advantages_BxT,
                                 inputs.mask_BxT, hp["gmpo_eps_low"], hp["gmpo_eps_high"])
  return loss, _metrics(inputs, clipped)
