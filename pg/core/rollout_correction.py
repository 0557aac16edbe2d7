"""Rollout correction: importance weights when the sampler's and the trainer's log-probs of the
same sampled tokens disagree (a bfloat16 inference engine against a float32 trainer; samples
drawn with stale parameters in asynchronous RL).

With δ_t = clamp(log π_train(y_t) − log π_sampler(y_t), ±20) over a response's generated tokens,
ρ_t = e^{δ_t} (token ratio), ρ = e^{Σ_t δ_t} (sequence ratio) and ρ̄ = e^{(1/|y|) Σ_t δ_t} (its
geometric mean per token):

    token TIS        w_t = min(ρ_t, C)                          truncated IS, per token
    sequence TIS     w_t = min(ρ, C)                            one weight per response
    token MIS        w_t = ρ_t·1[lo ≤ ρ_t ≤ hi]                 masked IS (IcePop): tokens outside
                                                                the band get no gradient at all
    sequence MIS     w_t = ρ·1[lo ≤ ρ ≤ hi]
    Geo-RS           w_t = 1[lo ≤ ρ̄ ≤ hi]                       rejection by the geometric mean
    off-policy mask  w_t = 1 − 1[A < 0 and (1/|y|) Σ_t −δ_t > δ]  drop a negative-advantage
                                                                response the trainer has moved
                                                                away from (DeepSeek-V3.2)

Each returns `(weights_BxT, rejected_BxT)`: weights to multiply the per-token policy loss with
(no gradient; 0 on masked tokens) and 1.0 where a token or its response was clipped, masked or
rejected. Token TIS is unbiased only while no weight is clipped; sequence IS is the unbiased
correction of the sequence-level estimator and has the larger variance (see the estimator lab).
`diagnostics` gives what to log each update: the effective sample size of the weights, the share
changed by the correction, and the mean k3 mismatch KL(π_sampler ‖ π_train) per token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pg.core import _checks
from pg.core.kl import kl_k3, log_ratio
from pg.core.masked import masked_mean

INF = float("inf")
MODES = ("none", "token_tis", "sequence_tis", "token_mis", "sequence_mis", "geo_rs")


def _prepare(fn, train_logp_BxT, sampler_logp_BxT, mask_BxT):
  _checks.rank(fn, "train_logp_BxT", train_logp_BxT, 2)
  _checks.same_shape(fn, {"train_logp_BxT": train_logp_BxT, "sampler_logp_BxT": sampler_logp_BxT,
                          "mask_BxT": mask_BxT})
  m = jnp.asarray(mask_BxT, jnp.float32)
  delta = log_ratio(jax.lax.stop_gradient(train_logp_BxT),
                    jax.lax.stop_gradient(sampler_logp_BxT)) * m
  return delta, m


def _band(fn, lo, hi):
  _checks.in_range(fn, "lo", lo, 0.0, INF, hi_open=True)
  _checks.in_range(fn, "hi", hi, 0.0, INF, lo_open=True, hi_open=True)


def token_tis(train_logp_BxT, sampler_logp_BxT, mask_BxT, cap=2.0):
  """w_t = min(ρ_t, C). `train_logp_BxT`/`sampler_logp_BxT`: log-probs of the sampled tokens
  t ∈ [0, T) of rows b ∈ [0, B) under the trainer and the sampler; mask 1.0 on generated."""
  fn = "token_tis"
  delta, m = _prepare(fn, train_logp_BxT, sampler_logp_BxT, mask_BxT)
  _checks.in_range(fn, "cap", cap, 0.0, INF, lo_open=True, hi_open=True)
  ratio = jnp.exp(delta)
  return jnp.minimum(ratio, cap) * m, (ratio > cap).astype(jnp.float32) * m


def sequence_tis(train_logp_BxT, sampler_logp_BxT, mask_BxT, cap=2.0):
  """w_t = min(ρ, C), ρ = Π_t ρ_t of the row, on each of its generated tokens."""
  fn = "sequence_tis"
  delta, m = _prepare(fn, train_logp_BxT, sampler_logp_BxT, mask_BxT)
  _checks.in_range(fn, "cap", cap, 0.0, INF, lo_open=True, hi_open=True)
  ratio_B = jnp.exp(jnp.clip(jnp.sum(delta, axis=1), -20.0, 20.0))
  return (jnp.minimum(ratio_B, cap)[:, None] * m,
          (ratio_B > cap).astype(jnp.float32)[:, None] * m)


def token_mis(train_logp_BxT, sampler_logp_BxT, mask_BxT, lo=0.5, hi=2.0):
  """w_t = ρ_t inside [lo, hi], 0 outside (IcePop)."""
  fn = "token_mis"
  delta, m = _prepare(fn, train_logp_BxT, sampler_logp_BxT, mask_BxT)
  _band(fn, lo, hi)
  ratio = jnp.exp(delta)
  outside = ((ratio < lo) | (ratio > hi)).astype(jnp.float32) * m
  return ratio * (1.0 - outside) * m, outside


def sequence_mis(train_logp_BxT, sampler_logp_BxT, mask_BxT, lo=0.5, hi=2.0):
  """w_t = ρ inside [lo, hi], 0 outside: a response outside the band is dropped whole."""
  fn = "sequence_mis"
  delta, m = _prepare(fn, train_logp_BxT, sampler_logp_BxT, mask_BxT)
  _band(fn, lo, hi)
  ratio_B = jnp.exp(jnp.clip(jnp.sum(delta, axis=1), -20.0, 20.0))
  outside_B = ((ratio_B < lo) | (ratio_B > hi)).astype(jnp.float32)
  return (ratio_B * (1.0 - outside_B))[:, None] * m, outside_B[:, None] * m


def geometric_rejection(train_logp_BxT, sampler_logp_BxT, mask_BxT, lo=0.5, hi=2.0):
  """w_t = 1 when the row's geometric-mean ratio ρ̄ lies in [lo, hi], else 0 (Geo-RS)."""
  fn = "geometric_rejection"
  delta, m = _prepare(fn, train_logp_BxT, sampler_logp_BxT, mask_BxT)
  _band(fn, lo, hi)
  geo_B = jnp.exp(jnp.sum(delta, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0))
  outside_B = ((geo_B < lo) | (geo_B > hi)).astype(jnp.float32)
  return (1.0 - outside_B)[:, None] * m, outside_B[:, None] * m


def off_policy_sequence_mask(train_logp_BxT, sampler_logp_BxT, advantages_BxT, mask_BxT,
                             delta=1e-3):
  """w_t = 0 on responses with A < 0 (their token mean) whose mean log-ratio
  (1/|y|) Σ_t (log π_sampler − log π_train) exceeds δ; else 1."""
  fn = "off_policy_sequence_mask"
  d, m = _prepare(fn, train_logp_BxT, sampler_logp_BxT, mask_BxT)
  _checks.same_shape(fn, {"train_logp_BxT": train_logp_BxT, "advantages_BxT": advantages_BxT})
  _checks.in_range(fn, "delta", delta, 0.0, INF, hi_open=True)
  n_B = jnp.maximum(jnp.sum(m, axis=1), 1.0)
  adv_B = jnp.sum(jax.lax.stop_gradient(jnp.asarray(advantages_BxT, jnp.float32)) * m, 1) / n_B
  drop_B = ((adv_B < 0) & (-jnp.sum(d, axis=1) / n_B > delta)).astype(jnp.float32)
  return (1.0 - drop_B)[:, None] * m, drop_B[:, None] * m


def correction_weights(mode: str, train_logp_BxT, sampler_logp_BxT, mask_BxT, cap=2.0, lo=0.5,
                       hi=2.0):
  """(weights_BxT, rejected_BxT) of `mode` (static: one of MODES; "none": weight 1)."""
  if mode not in MODES:
    raise ValueError(f"correction_weights: unknown `mode` {mode!r}; known: {', '.join(MODES)}.")
  if mode == "none":
    m = jnp.asarray(mask_BxT, jnp.float32)
    _prepare("correction_weights", train_logp_BxT, sampler_logp_BxT, mask_BxT)
    return m, jnp.zeros_like(m)
  if mode in ("token_tis", "sequence_tis"):
    fn = token_tis if mode == "token_tis" else sequence_tis
    return fn(train_logp_BxT, sampler_logp_BxT, mask_BxT, cap)
  fn = {"token_mis": token_mis, "sequence_mis": sequence_mis,
        "geo_rs": geometric_rejection}[mode]
  return fn(train_logp_BxT, sampler_logp_BxT, mask_BxT, lo, hi)


def effective_sample_size(weights_BxT, mask_BxT):
  """(Σ w)² / (N Σ w²) over the generated tokens, in (0, 1]: 1 when every weight is equal."""
  m = jnp.asarray(mask_BxT, jnp.float32)
  w = jax.lax.stop_gradient(weights_BxT) * m
  n = jnp.maximum(jnp.sum(m), 1.0)
  return jnp.square(jnp.sum(w)) / jnp.maximum(n * jnp.sum(jnp.square(w)), 1e-30)


def diagnostics(weights_BxT, rejected_BxT, train_logp_BxT, sampler_logp_BxT, mask_BxT) -> dict:
  """The per-update scalars to log: `is_ess` (effective sample size of the weights, in (0, 1]),
  `is_rejected_fraction` (share of tokens clipped, masked or rejected), `mismatch_k3` (mean
  k3 estimate of KL(π_sampler ‖ π_train) per token), `is_weight_mean`, `mismatch_abs_logp`
  (mean |log π_train − log π_sampler| per token) and `mismatch_ratio_outside` (share of tokens
  whose ratio π_train / π_sampler lies outside [0.5, 2])."""
  m = jnp.asarray(mask_BxT, jnp.float32)
  delta = jnp.abs(jax.lax.stop_gradient(train_logp_BxT) - jax.lax.stop_gradient(sampler_logp_BxT))
  return {"is_ess": effective_sample_size(weights_BxT, m),
          "mismatch_abs_logp": masked_mean(delta, m),
          "mismatch_ratio_outside": masked_mean((delta > jnp.log(2.0)).astype(jnp.float32), m),
          "is_rejected_fraction": masked_mean(rejected_BxT, m),
          "mismatch_k3": masked_mean(kl_k3(jax.lax.stop_gradient(sampler_logp_BxT),
                                           jax.lax.stop_gradient(train_logp_BxT)), m),
          "is_weight_mean": masked_mean(jax.lax.stop_gradient(weights_BxT), m)}
