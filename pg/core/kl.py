"""Per-token estimators of KL(π_θ ‖ π_ref) on tokens sampled from π_θ.

With Δ_t = log π_θ(y_t | y_<t) − log π_ref(y_t | y_<t), clamped to [−clamp, clamp] before any
`exp`:

    k1 = Δ                 unbiased for KL(π_θ ‖ π_ref), can be negative per sample
    k2 = ½ Δ²              biased, ≥ 0; E[∇k2] = ∇ KL(π_θ ‖ π_ref)
    k3 = e^{−Δ} + Δ − 1    unbiased, ≥ 0; E[∇k3] = ∇ KL(π_ref ‖ π_θ) (the reverse direction)
    E[∇k1] = E[∇ log π_θ] = 0

The gradient facts hold per token given the prefix (tested by enumeration). For a whole
sequence, ∇ KL(π_θ ‖ π_ref) also has cross terms Δ_t·∇ log π_θ(y_s | y_<s) for s < t that a
per-token loss term never sees; a k1 penalty in the per-token reward reaches them through the
returns (`pg.rewards.per_token_rewards`). So: k1 or k3 in the reward, k2 in the loss.
"""

from __future__ import annotations

import jax.numpy as jnp

from pg.core import _checks

LOG_RATIO_CLAMP = 20.0


def log_ratio(logp_BxT, ref_logp_BxT, clamp=LOG_RATIO_CLAMP):
  """Δ = log π_θ − log π_ref, clamped to ±clamp (float32)."""
  _checks.same_shape("log_ratio", {"logp_BxT": logp_BxT, "ref_logp_BxT": ref_logp_BxT})
  delta = logp_BxT.astype(jnp.float32) - ref_logp_BxT.astype(jnp.float32)
  return jnp.clip(delta, -clamp, clamp)


def kl_k1(logp_BxT, ref_logp_BxT):
  """k1 = Δ."""
  return log_ratio(logp_BxT, ref_logp_BxT)


def kl_k2(logp_BxT, ref_logp_BxT):
  """k2 = ½ Δ²."""
  return 0.5 * jnp.square(log_ratio(logp_BxT, ref_logp_BxT))


def kl_k3(logp_BxT, ref_logp_BxT):
  """k3 = e^{−Δ} + Δ − 1 (Schulman's low-variance estimator), ≥ 0."""
  delta = log_ratio(logp_BxT, ref_logp_BxT)
  return jnp.expm1(-delta) + delta


KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_estimate(logp_BxT, ref_logp_BxT, kind: str):
  """Dispatches to k1, k2 or k3 by name (a static string)."""
  if kind not in KL_ESTIMATORS:
    raise ValueError(f"kl_estimate: unknown `kind` {kind!r}; known: {sorted(KL_ESTIMATORS)}.")
  return KL_ESTIMATORS[kind](logp_BxT, ref_logp_BxT)
