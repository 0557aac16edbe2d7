"""Per-token rewards: the sequence score on the last generated token, a KL penalty on every one.

    r_t = −β·kl_t·m_t + R·1[t = last generated token]

The buffer is float32 whatever the dtype of the score or the tokens (an integer buffer would
truncate a score of 0.7 to 0).
"""

from __future__ import annotations

import jax.numpy as jnp

from pg.core import _checks
from pg.core.masked import last_token_mask


def per_token_rewards(scores_B, mask_BxT, kl_BxT=None, kl_coef=0.0):
  """Builds r_t as above.

  Args:
    scores_B: sequence scores R, one per row.
    mask_BxT: float mask, 1.0 on generated tokens t in [0, T).
    kl_BxT: per-token KL estimate kl_t (e.g. `pg.kl.kl_k1`), or None for no penalty.
    kl_coef: β ≥ 0, scalar (may be traced).
  Returns:
    rewards_BxT, float32, 0 on masked positions.
  """
  fn = "per_token_rewards"
  _checks.rank(fn, "mask_BxT", mask_BxT, 2)
  _checks.shape(fn, "scores_B", scores_B, mask_BxT.shape[:1], "`mask_BxT`[:1]")
  _checks.in_range(fn, "kl_coef", kl_coef, 0.0, float("inf"), hi_open=True)
  mask_BxT = mask_BxT.astype(jnp.float32)
  rewards_BxT = scores_B.astype(jnp.float32)[:, None] * last_token_mask(mask_BxT)
  if kl_BxT is not None:
    _checks.same_shape(fn, {"mask_BxT": mask_BxT, "kl_BxT": kl_BxT})
    rewards_BxT = rewards_BxT - kl_coef * kl_BxT.astype(jnp.float32) * mask_BxT
  return rewards_BxT
