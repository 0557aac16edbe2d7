"""Baselines on sequence scores, returning sequence-level advantages `[B]`.

Scores R_i come in groups of G consecutive rows (G samples of one prompt, B = P·G):

    none            A_i = R_i
    moving average  A_i = R_i − b,  b = bias-corrected EMA of past batch means (state in, out)
    group mean      A_i = R_i − mean_g R                        (biased by (G−1)/G; Dr. GRPO)
    RLOO            A_i = R_i − (Σ_j R_j − R_i)/(G − 1) = G/(G − 1)·(R_i − mean_g R)
    GRPO            A_i = (R_i − mean_g R) / (std_g R + ε)       (Bessel or population std)

Any baseline that does not depend on the sample it is subtracted from keeps the estimator
unbiased (E[b ∇ log π] = 0); RLOO's is the mean of the *other* samples, so it is unbiased, while
the group mean includes R_i and shrinks the gradient by (G − 1)/G.
"""

from __future__ import annotations

import jax.numpy as jnp

from pg.core import _checks


def _grouped(fn, scores_B, group_size, minimum=1):
  _checks.rank(fn, "scores_B", scores_B, 1)
  _checks.group_size(fn, scores_B.shape[0], group_size, minimum=minimum)
  return jnp.asarray(scores_B, jnp.float32).reshape(-1, group_size)


def group_mean_advantages(scores_B, group_size: int):
  """A_i = R_i − mean_g R."""
  r_PxG = _grouped("group_mean_advantages", scores_B, group_size)
  return (r_PxG - r_PxG.mean(axis=1, keepdims=True)).reshape(-1)


def rloo_advantages(scores_B, group_size: int):
  """A_i = R_i − mean_{j≠i} R_j (leave-one-out; needs G ≥ 2)."""
  r_PxG = _grouped("rloo_advantages", scores_B, group_size, minimum=2)
  others_PxG = (r_PxG.sum(axis=1, keepdims=True) - r_PxG) / (group_size - 1)
  return (r_PxG - others_PxG).reshape(-1)


def grpo_advantages(scores_B, group_size: int, eps=1e-6, *, unbiased_std: bool = True):
  """A_i = (R_i − mean_g R)/(std_g R + ε); Bessel std when `unbiased_std` (G = 1 gives A = 0)."""
  fn = "grpo_advantages"
  r_PxG = _grouped(fn, scores_B, group_size)
  _checks.in_range(fn, "eps", eps, 0.0, float("inf"), hi_open=True)
  centred_PxG = r_PxG - r_PxG.mean(axis=1, keepdims=True)
  # Second pass: the float32 mean of tied scores can be an ulp off, which made a tied group's
  # "std" ~1e-5 ≫ eps and gave every sample ±√((G−1)/G); re-centring makes ties exactly 0.
  centred_PxG = centred_PxG - centred_PxG.mean(axis=1, keepdims=True)
  ddof = 1 if (unbiased_std and group_size > 1) else 0
  std_P = jnp.sqrt(jnp.sum(jnp.square(centred_PxG), axis=1) / (group_size - ddof))
  return (centred_PxG / (std_P[:, None] + eps)).reshape(-1)


def init_baseline_state():
  """State of the moving-average baseline: EMA numerator and its weight (for bias correction)."""
  return {"ema_value": jnp.zeros((), jnp.float32), "ema_weight": jnp.zeros((), jnp.float32)}


def moving_average_baseline(state):
  """b = ema_value / ema_weight (Adam-style bias correction); 0 before the first update."""
  w = state["ema_weight"]
  return jnp.where(w > 0, state["ema_value"] / jnp.maximum(w, 1e-12), 0.0)


def update_moving_average(state, scores_B, decay):
  """EMA update with the batch mean: v ← d·v + (1 − d)·mean R, w ← d·w + (1 − d)."""
  fn = "update_moving_average"
  _checks.rank(fn, "scores_B", scores_B, 1)
  _checks.in_range(fn, "decay", decay, 0.0, 1.0, hi_open=True)
  mean = jnp.mean(jnp.asarray(scores_B, jnp.float32))
  return {"ema_value": decay * state["ema_value"] + (1.0 - decay) * mean,
          "ema_weight": decay * state["ema_weight"] + (1.0 - decay)}


def moving_average_advantages(scores_B, state, decay):
  """A_i = R_i − b with b from *past* batches only, then the state updated with this batch."""
  b = moving_average_baseline(state)
  adv_B = jnp.asarray(scores_B, jnp.float32) - b
  return adv_B, update_moving_average(state, scores_B, decay)
