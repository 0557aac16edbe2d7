"""Loss aggregation: per-token losses `[B, T]` to one scalar (the length-bias choice).

    token-mean               Σ_{b,t} ℓ m / Σ_{b,t} m            (default; TRL, verl, OpenRLHF)
    seq-mean-token-mean      mean_b [Σ_t ℓ m / Σ_t m]           (each sequence weighs the same)
    seq-mean-token-sum       mean_b [Σ_t ℓ m]                   (the sequence-level surrogate)
    seq-mean-token-sum-norm  mean_b [Σ_t ℓ m] / N, N constant   (Dr. GRPO; N defaults to T)
"""

from __future__ import annotations

import jax.numpy as jnp

from pg.core import _checks

TOKEN_MEAN = "token-mean"
SEQ_MEAN_TOKEN_MEAN = "seq-mean-token-mean"
SEQ_MEAN_TOKEN_SUM = "seq-mean-token-sum"
SEQ_MEAN_TOKEN_SUM_NORM = "seq-mean-token-sum-norm"
MODES = (TOKEN_MEAN, SEQ_MEAN_TOKEN_MEAN, SEQ_MEAN_TOKEN_SUM, SEQ_MEAN_TOKEN_SUM_NORM)
DEFAULT_MODE = TOKEN_MEAN


def aggregate_loss(loss_BxT, mask_BxT, mode: str = DEFAULT_MODE, normaliser=None):
  """Aggregates per-token losses by `mode` (a static string); `normaliser` only for `-norm`.

  Rows without any generated token contribute 0 (never NaN).
  """
  fn = "aggregate_loss"
  if mode not in MODES:
    raise ValueError(f"{fn}: unknown `mode` {mode!r}; known: {', '.join(MODES)}.")
  _checks.rank(fn, "loss_BxT", loss_BxT, 2)
  _checks.same_shape(fn, {"loss_BxT": loss_BxT, "mask_BxT": mask_BxT})
  m = jnp.asarray(mask_BxT, jnp.float32)
  per_seq_sum_B = jnp.sum(loss_BxT * m, axis=1)
  if mode == TOKEN_MEAN:
    return jnp.sum(per_seq_sum_B) / jnp.maximum(jnp.sum(m), 1.0)
  if mode == SEQ_MEAN_TOKEN_MEAN:
    return jnp.mean(per_seq_sum_B / jnp.maximum(jnp.sum(m, axis=1), 1.0))
  if mode == SEQ_MEAN_TOKEN_SUM:
    return jnp.mean(per_seq_sum_B)
  if normaliser is None:
    normaliser = loss_BxT.shape[1]
  _checks.in_range(fn, "normaliser", normaliser, 0.0, float("inf"), lo_open=True, hi_open=True)
  return jnp.mean(per_seq_sum_B) / normaliser
