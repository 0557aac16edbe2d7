"""Multistep returns over `[B, T]` response tokens: discounted returns, GAE(γ, λ), λ-returns.

Masks: m_t = 1.0 marks a generated token. The recursions run right to left and *skip* masked
positions: at a masked t the running return, advantage and "next value" carry through unchanged,
so a gap inside a response (e.g. tool output) is stepped over, and after the last generated
token V = 0 and the return is 0. Outputs are 0 on masked positions.

All recursions are the affine map x_t = a_t + c_t·x_{t+1} (x_T = 0), so besides the `lax.scan`
versions there is an `associative_scan` one of O(log T) depth: (a₁, c₁)∘(a₂, c₂) = (a₁ + c₁a₂,
c₁c₂).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pg.core import _checks


def _check(fn, rewards_BxT, values_BxT, mask_BxT, gamma, lam):
  _checks.rank(fn, "rewards_BxT", rewards_BxT, 2)
  _checks.same_shape(fn, {"rewards_BxT": rewards_BxT, "values_BxT": values_BxT,
                          "mask_BxT": mask_BxT})
  _checks.in_range(fn, "gamma", gamma, 0.0, 1.0)
  if lam is not None:
    _checks.in_range(fn, "lam", lam, 0.0, 1.0)


def _f32(*xs):
  return [jnp.asarray(x, jnp.float32) for x in xs]


def _reverse_affine_scan(a_BxT, c_BxT):
  """x_t = a_t + c_t·x_{t+1}, x_T = 0, by `lax.scan` right to left."""
  def step(x_B, ac):
    a_B, c_B = ac
    x_B = a_B + c_B * x_B
    return x_B, x_B
  _, x_TxB = jax.lax.scan(step, jnp.zeros(a_BxT.shape[:1], a_BxT.dtype),
                          (a_BxT.T, c_BxT.T), reverse=True)
  return x_TxB.T


def _reverse_affine_associative(a_BxT, c_BxT):
  """x_t = a_t + c_t·x_{t+1}, x_T = 0, by `lax.associative_scan` in O(log T) depth."""
  def compose(later, earlier):
    # With reverse=True the scan folds from the right: `later` holds the map for positions
    # further right, `earlier` the one to apply on top of it.
    a_l, c_l = later
    a_e, c_e = earlier
    return a_e + c_e * a_l, c_e * c_l
  x_BxT, _ = jax.lax.associative_scan(compose, (a_BxT, c_BxT), reverse=True, axis=1)
  return x_BxT


def discounted_returns(rewards_BxT, mask_BxT, gamma):
  """G_t = r_t + γ·G_{t'} with t' the next generated token after t (G = 0 after the last).

  Args:
    rewards_BxT: per-token rewards r_t, t in [0, T).
    mask_BxT: 1.0 on generated tokens.
    gamma: discount γ in [0, 1], scalar (may be traced).
  Returns:
    returns_BxT, float32, 0 on masked positions.
  """
  _check("discounted_returns", rewards_BxT, None, mask_BxT, gamma, None)
  r, m, g = _f32(rewards_BxT, mask_BxT, gamma)
  return _reverse_affine_scan(m * r, m * g + (1.0 - m)) * m


def generalized_advantage_estimation(rewards_BxT, values_BxT, mask_BxT, gamma, lam):
  """GAE(γ, λ) by `lax.scan` in reverse (Schulman et al., 2016).

      δ_t = r_t + γ·V_{t'} − V_t,   A_t = δ_t + γλ·A_{t'}

  with t' the next generated token after t, V_{t'} = A_{t'} = 0 past the last one.
  λ = 1 gives G_t − V_t (Monte Carlo returns minus V); λ = 0 gives the TD errors δ_t.

  Args:
    rewards_BxT: per-token rewards r_t, t in [0, T).
    values_BxT: V(s_t), the value before emitting token t, t in [0, T).
    mask_BxT: 1.0 on generated tokens.
    gamma, lam: scalars in [0, 1] (may be traced).
  Returns:
    advantages_BxT, float32, 0 on masked positions.
  """
  _check("generalized_advantage_estimation", rewards_BxT, values_BxT, mask_BxT, gamma, lam)
  r, v, m, g, l = _f32(rewards_BxT, values_BxT, mask_BxT, gamma, lam)

  def step(carry, x):
    next_v_B, adv_B = carry
    r_B, v_B, m_B = x
    delta_B = r_B + g * next_v_B - v_B
    adv_B = jnp.where(m_B > 0, delta_B + g * l * adv_B, adv_B)
    next_v_B = jnp.where(m_B > 0, v_B, next_v_B)
    return (next_v_B, adv_B), adv_B

  zeros_B = jnp.zeros(r.shape[:1], jnp.float32)
  _, adv_TxB = jax.lax.scan(step, (zeros_B, zeros_B), (r.T, v.T, m.T), reverse=True)
  return adv_TxB.T * m


def generalized_advantage_estimation_associative(rewards_BxT, values_BxT, mask_BxT, gamma, lam):
  """GAE(γ, λ) as above, by two `lax.associative_scan`s (O(log T) depth, same result).

  The next value is itself a reverse affine recursion: z_t = m_t V_t + (1 − m_t) z_{t+1} is the
  value at the first generated token ≥ t, and V_{t'} = z_{t+1}.
  """
  _check("generalized_advantage_estimation_associative", rewards_BxT, values_BxT, mask_BxT,
         gamma, lam)
  r, v, m, g, l = _f32(rewards_BxT, values_BxT, mask_BxT, gamma, lam)
  z_BxT = _reverse_affine_associative(m * v, 1.0 - m)
  next_v_BxT = jnp.concatenate([z_BxT[:, 1:], jnp.zeros_like(z_BxT[:, :1])], axis=1)
  delta_BxT = m * (r + g * next_v_BxT - v)
  return _reverse_affine_associative(delta_BxT, m * g * l + (1.0 - m)) * m


def lambda_returns(rewards_BxT, values_BxT, mask_BxT, gamma, lam):
  """λ-returns G^λ_t = r_t + γ[(1 − λ)V_{t'} + λ G^λ_{t'}] = A^GAE_t + V_t (critic targets)."""
  adv_BxT = generalized_advantage_estimation(rewards_BxT, values_BxT, mask_BxT, gamma, lam)
  return (adv_BxT + jnp.asarray(values_BxT, jnp.float32)) * jnp.asarray(mask_BxT, jnp.float32)
