"""Masked reductions over `[B, T]` arrays, where `mask_BxT` is 1.0 on generated tokens.

Every mean here divides by the number of unmasked entries, never by `T`.
"""

from __future__ import annotations

import jax.numpy as jnp

from pg.core import _checks


def masked_sum(x_BxT, mask_BxT, axis=None):
  """Σ x·m over `axis` (all axes when None)."""
  _checks.same_shape("masked_sum", {"x_BxT": x_BxT, "mask_BxT": mask_BxT})
  return jnp.sum(x_BxT * mask_BxT, axis=axis)


def masked_mean(x_BxT, mask_BxT, axis=None):
  """Σ x·m / Σ m over `axis`; 0 where a slice has no unmasked entry (never NaN)."""
  _checks.same_shape("masked_mean", {"x_BxT": x_BxT, "mask_BxT": mask_BxT})
  count = jnp.sum(mask_BxT, axis=axis)
  return jnp.sum(x_BxT * mask_BxT, axis=axis) / jnp.maximum(count, 1.0)


def _centred(x_BxT, mask_BxT):
  """x − mean of the unmasked entries, in two passes: the float32 mean of tied values can be an
  ulp off, and the second pass makes tied values centre to exactly 0 (so their variance is 0)."""
  d_BxT = x_BxT - masked_mean(x_BxT, mask_BxT)
  return d_BxT - masked_mean(d_BxT, mask_BxT)


def masked_var(x_BxT, mask_BxT, *, unbiased: bool = True):
  """Variance of the unmasked entries (Bessel-corrected when `unbiased`), a scalar."""
  count = jnp.sum(mask_BxT)
  ss = jnp.sum(jnp.square(_centred(x_BxT, mask_BxT)) * mask_BxT)
  denom = count - 1.0 if unbiased else count
  return ss / jnp.maximum(denom, 1.0)


def masked_whiten(x_BxT, mask_BxT, *, eps=1e-8, shift_mean: bool = True):
  """(x − mean) / √(var + ε) over all unmasked entries of the batch; masked entries become 0.

  `shift_mean=False` only rescales (keeps the sign of every entry), as some PPO codes do. Where
  var + ε = 0 (ε = 0 with fewer than 2 tokens, or tied values) nothing can be rescaled: the
  scale is 1, so centred values are 0 (never NaN, nor a NaN gradient).
  """
  _checks.same_shape("masked_whiten", {"x_BxT": x_BxT, "mask_BxT": mask_BxT})
  var = masked_var(x_BxT, mask_BxT, unbiased=True)
  centred = _centred(x_BxT, mask_BxT) if shift_mean else x_BxT
  denom = var + eps
  safe = jnp.where(denom > 0, denom, 1.0)
  return centred * jnp.reciprocal(jnp.sqrt(safe)) * mask_BxT


def last_token_mask(mask_BxT):
  """1.0 at the last t with m_t = 1 in each row, 0 elsewhere (all zeros for an empty row)."""
  _checks.rank("last_token_mask", "mask_BxT", mask_BxT, 2)
  m = (mask_BxT > 0).astype(jnp.float32)
  # Number of generated tokens strictly after t: reverse cumulative sum, shifted by one.
  after_BxT = jnp.flip(jnp.cumsum(jnp.flip(m, axis=1), axis=1), axis=1) - m
  return m * (after_BxT == 0).astype(jnp.float32)
