"""Rotary position embeddings in the rotate-half convention Hugging Face's Llama family uses.

Pair i of a head's Dh features is (x_i, x_{i + Dh/2}), rotated by angle p·θ_i at position p:

    θ_i = base^(−2i / Dh),  i in [0, Dh/2)
    rope(x)_p = x · cos(p θ) + rotate_half(x) · sin(p θ),   rotate_half(x) = (−x₂, x₁)

(cos and sin repeated over both halves). llama.cpp's GGUF files store Q and K rows permuted for
the interleaved convention (pairs (x_{2i}, x_{2i+1})); `pg.policy.hf.gguf_io` undoes that, so
every checkpoint meets this one convention here.

Llama 3's frequency scaling (`rope_scaling = {"rope_type": "llama3", ...}`) divides the low
frequencies by `factor`, keeps the high ones, and blends between: wavelength λ_i = 2π / θ_i,

    θ_i / factor                        if λ_i > L / low_freq_factor
    θ_i                                 if λ_i < L / high_freq_factor
    (1 − s) θ_i / factor + s θ_i        else,  s = (L / λ_i − low) / (high − low)

with L = `original_max_position_embeddings` (transformers' `_compute_llama3_parameters`).
"""

from __future__ import annotations

import math
from typing import Optional

import jax.numpy as jnp
import numpy as np

ROPE_TYPES = ("default", "llama3")


def check_scaling(scaling: Optional[dict]) -> None:
  """Refuses a rope scaling this module does not implement, naming the field."""
  if not scaling:
    return
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  if kind not in ROPE_TYPES:
    raise ValueError(f"model.rope_scaling: rope_type {kind!r} is not supported; supported: "
                     f"{', '.join(ROPE_TYPES)}.")
  if kind == "llama3":
    missing = [k for k in ("factor", "low_freq_factor", "high_freq_factor",
                           "original_max_position_embeddings") if k not in scaling]
    if missing:
      raise ValueError(f"model.rope_scaling: llama3 scaling needs {missing}.")


def inverse_frequencies(head_dim: int, base: float, scaling: Optional[dict] = None) -> np.ndarray:
  """θ_i for i in [0, head_dim / 2), float32 (computed in float64 on the host)."""
  theta = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
  kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
  if kind == "llama3":
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_len = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / theta
    scaled = np.where(wavelen > old_len / low, theta / factor, theta)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
    theta = np.where(medium, smoothed, scaled)
  return theta.astype(np.float32)


def apply_rope(x_BxLxHxDh, positions_BxL, theta_half):
  """x rotated at its (per-row) positions; float32 angles, result in x's dtype."""
  angles_BxLxH2 = positions_BxL.astype(jnp.float32)[..., None] * jnp.asarray(theta_half)
  cos = jnp.cos(angles_BxLxH2)[:, :, None, :]
  sin = jnp.sin(angles_BxLxH2)[:, :, None, :]
  x = x_BxLxHxDh.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxLxHxDh.dtype)
