"""Per-token trust regions beyond PPO's hard clip: SAPO, CISPO, DPPO and the truncated-IS
policy gradient.

With ρ_t = exp(clamp(log π_θ − log π_old, ±20)) for the sampled token and A_t its advantage:

    SAPO (Gao et al., 2025, "Soft Adaptive Policy Optimization"): a soft gate instead of a clip,
        f_τ(ρ) = σ(τ(ρ − 1))·4/τ,  τ = τ_pos if A_t > 0 else τ_neg,   ℓ_t = −f_τ(ρ_t)·A_t
      ∇ℓ_t = −4σ(1 − σ)·ρ_t·A_t ∇log π_t: at ρ = 1 the weight is 1 (REINFORCE's gradient), and
      it decays smoothly as ρ leaves 1, faster for negative advantages (τ_neg > τ_pos).
    CISPO (MiniMax-M1, 2025): clip the importance weight, never the gradient,
        ℓ_t = −sg(clip(ρ_t, 1 − ε_low, 1 + ε_high))·A_t·log π_θ(y_t)
    DPPO ("Rethinking the Trust Region in LLM RL", arXiv 2602.04879, 2026): the trust region is a
      divergence between the old and new probability of the sampled token, p' = π_old(y_t),
      p = π_θ(y_t), measured as a two-outcome (Bernoulli) distribution:
        binary TV   D = p − p'             A > 0: keep if D ≤ δ_high;  A < 0: keep if D ≥ −δ_low
        binary KL   D = p' log(p'/p) + (1 − p') log((1 − p')/(1 − p))
                                           A > 0: keep if D ≤ δ_high or p ≤ p'
                                           A < 0: keep if D ≤ δ_low or p ≥ p'
        ℓ_t = −A_t·sg(min(ρ_t, C))·log π_θ(y_t)·keep_t   (kept tokens get PPO's gradient −Aρ∇log π)
    Truncated-IS policy gradient (the "bypass" form of rollout correction: π_old is the sampler
      and no trainer-side recompute is made):  ℓ_t = −sg(min(ρ_t, C))·A_t·log π_θ(y_t)

Defaults are the references': SAPO τ_pos = 1, τ_neg = 1.05; CISPO ε_low = 1 (no lower bound),
ε_high = 0.2 (verl's example); DPPO δ = 0.15 (TV) and 0.05 (KL), C = 20 (verl); IS cap C = 2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pg.core import _checks
from pg.core.kl import log_ratio
from pg.core.policy_losses import loss_metrics
from pg.core.registry import PolicyLossInputs, register_policy_loss

INF = float("inf")


def _prepare(fn, logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT):
  """(ρ_BxT with no gradient, sg(A)_BxT, float mask) after the shape checks."""
  _checks.loss_arrays(fn, logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT)
  ratio_BxT = jnp.exp(log_ratio(jax.lax.stop_gradient(logp_BxT),
                                jax.lax.stop_gradient(old_logp_BxT)))
  adv_BxT = jax.lax.stop_gradient(jnp.asarray(advantages_BxT, jnp.float32))
  return ratio_BxT, adv_BxT, jnp.asarray(mask_BxT, jnp.float32)


def sapo_gate(ratio, tau):
  """f_τ(ρ) = σ(τ(ρ − 1))·4/τ: f(1) = 2/τ, f'(1) = 1."""
  return jax.nn.sigmoid(tau * (ratio - 1.0)) * (4.0 / tau)


def sapo_surrogate(logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT, tau_pos=1.0, tau_neg=1.05):
  """ℓ_t = −f_τ(ρ_t)·A_t, `[B, T]` (differentiable through ρ). Arguments as PPO's:
  logp_BxT/old_logp_BxT: log-probs of the sampled tokens, t ∈ [0, T); mask_BxT: generated."""
  fn = "sapo_surrogate"
  _checks.loss_arrays(fn, logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT)
  _checks.in_range(fn, "tau_pos", tau_pos, 0.0, INF, lo_open=True, hi_open=True)
  _checks.in_range(fn, "tau_neg", tau_neg, 0.0, INF, lo_open=True, hi_open=True)
  adv_BxT = jax.lax.stop_gradient(jnp.asarray(advantages_BxT, jnp.float32))
  ratio_BxT = jnp.exp(log_ratio(logp_BxT, jax.lax.stop_gradient(old_logp_BxT)))
  tau_BxT = jnp.where(adv_BxT > 0, tau_pos, tau_neg)
  return -sapo_gate(ratio_BxT, tau_BxT) * adv_BxT * mask_BxT


def weighted_log_prob_loss(logp_BxT, weight_BxT, advantages_BxT, mask_BxT):
  """ℓ_t = −sg(w_t)·A_t·log π_θ(y_t)·m_t: the detached-weight policy gradient all of
  CISPO, DPPO and truncated IS share."""
  return (-jax.lax.stop_gradient(weight_BxT) * jax.lax.stop_gradient(advantages_BxT)
          * logp_BxT * mask_BxT)


def cispo_surrogate(logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT, eps_low=1.0,
                    eps_high=0.2):
  """CISPO's loss `[B, T]` and clipped_BxT (1.0 where the weight was clipped)."""
  fn = "cispo_surrogate"
  ratio, adv, m = _prepare(fn, logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT)
  _checks.in_range(fn, "eps_low", eps_low, 0.0, INF, hi_open=True)
  _checks.in_range(fn, "eps_high", eps_high, 0.0, INF, hi_open=True)
  weight = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
  return (weighted_log_prob_loss(logp_BxT, weight, adv, m),
          (weight != ratio).astype(jnp.float32) * m)


def truncated_is_surrogate(logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT, cap=2.0):
  """ℓ_t = −sg(min(ρ_t, C))·A_t·log π_θ, `[B, T]`, and truncated_BxT (1.0 where ρ_t > C)."""
  fn = "truncated_is_surrogate"
  ratio, adv, m = _prepare(fn, logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT)
  _checks.in_range(fn, "cap", cap, 0.0, INF, lo_open=True, hi_open=True)
  return (weighted_log_prob_loss(logp_BxT, jnp.minimum(ratio, cap), adv, m),
          (ratio > cap).astype(jnp.float32) * m)


def binary_tv(p, p_old):
  """Signed binary total variation of the sampled token's probability: p − p_old."""
  return p - p_old


def binary_kl(p, p_old, eps=1e-8):
  """KL(Bernoulli(p_old) ‖ Bernoulli(p)) = p' log(p'/p) + (1 − p') log((1 − p')/(1 − p))."""
  return (p_old * (jnp.log(p_old + eps) - jnp.log(p + eps))
          + (1.0 - p_old) * (jnp.log(1.0 - p_old + eps) - jnp.log(1.0 - p + eps)))


def dppo_surrogate(logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT, divergence="tv",
                   delta_low=0.15, delta_high=0.15, ratio_cap=20.0):
  """DPPO's loss `[B, T]` and masked_BxT (1.0 where a token left the trust region and lost its
  gradient). `divergence`: "tv" or "kl" (static)."""
  fn = "dppo_surrogate"
  ratio, adv, m = _prepare(fn, logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT)
  if divergence not in ("tv", "kl"):
    raise ValueError(f"{fn}: `divergence` must be 'tv' or 'kl', got {divergence!r}.")
  _checks.in_range(fn, "delta_low", delta_low, 0.0, INF, hi_open=True)
  _checks.in_range(fn, "delta_high", delta_high, 0.0, INF, hi_open=True)
  _checks.in_range(fn, "ratio_cap", ratio_cap, 0.0, INF, lo_open=True, hi_open=True)
  p = jnp.exp(jax.lax.stop_gradient(logp_BxT).astype(jnp.float32))
  p_old = jnp.exp(jax.lax.stop_gradient(old_logp_BxT).astype(jnp.float32))
  if divergence == "tv":
    keep_pos, keep_neg = binary_tv(p, p_old) <= delta_high, binary_tv(p, p_old) >= -delta_low
  else:
    d = binary_kl(p, p_old)
    keep_pos, keep_neg = (d <= delta_high) | (p <= p_old), (d <= delta_low) | (p >= p_old)
  keep = jnp.where(adv > 0, keep_pos, keep_neg).astype(jnp.float32)
  loss = weighted_log_prob_loss(logp_BxT, jnp.minimum(ratio, ratio_cap) * keep, adv, m)
  return loss, (1.0 - keep) * m


@register_policy_loss("sapo", aggregation="seq-mean-token-mean", hparams={
    "sapo_tau_pos": (1.0, 0.0, INF, True, True, "SAPO gate temperature for A > 0"),
    "sapo_tau_neg": (1.05, 0.0, INF, True, True, "SAPO gate temperature for A ≤ 0"),
})
def sapo_loss(inputs: PolicyLossInputs, hp):
  """SAPO: the soft gate f_τ(ρ)·A, token-adaptive temperatures by the advantage's sign."""
  inputs.check("sapo")
  loss = sapo_surrogate(inputs.logp_BxT, inputs.old_logp_BxT, inputs.advantages_BxT,
                        inputs.mask_BxT, hp["sapo_tau_pos"], hp["sapo_tau_neg"])
  return loss, loss_metrics(inputs)


@register_policy_loss("cispo", aggregation="token-mean", hparams={
    "cispo_eps_low": (1.0, 0.0, INF, False, True, "CISPO weight clip below 1 (1: none)"),
    "cispo_eps_high": (0.2, 0.0, INF, False, True, "CISPO weight clip above 1"),
})
def cispo_loss(inputs: PolicyLossInputs, hp):
  """CISPO: −sg(clip(ρ))·A·log π, every token keeps its gradient."""
  inputs.check("cispo")
  loss, clipped = cispo_surrogate(inputs.logp_BxT, inputs.old_logp_BxT, inputs.advantages_BxT,
                                  inputs.mask_BxT, hp["cispo_eps_low"], hp["cispo_eps_high"])
  return loss, loss_metrics(inputs, clipped)


_DPPO_CAP = {"dppo_ratio_cap": (20.0, 0.0, INF, True, True,
                                "DPPO truncation C of the detached ratio")}


@register_policy_loss("dppo_tv", hparams={
    **_DPPO_CAP,
    "dppo_tv_low": (0.15, 0.0, INF, False, True, "DPPO binary-TV bound for A < 0"),
    "dppo_tv_high": (0.15, 0.0, INF, False, True, "DPPO binary-TV bound for A > 0"),
})
def dppo_tv_loss(inputs: PolicyLossInputs, hp):
  """DPPO-Binary-TV: tokens whose probability moved more than δ in the advantage's direction
  lose their gradient."""
  inputs.check("dppo_tv")
  loss, masked = dppo_surrogate(inputs.logp_BxT, inputs.old_logp_BxT, inputs.advantages_BxT,
                                inputs.mask_BxT, "tv", hp["dppo_tv_low"], hp["dppo_tv_high"],
                                hp["dppo_ratio_cap"])
  return loss, loss_metrics(inputs, masked)


@register_policy_loss("dppo_kl", hparams={
    **_DPPO_CAP,
    "dppo_kl_low": (0.05, 0.0, INF, False, True, "DPPO binary-KL bound for A < 0"),
    "dppo_kl_high": (0.05, 0.0, INF, False, True, "DPPO binary-KL bound for A > 0"),
})
def dppo_kl_loss(inputs: PolicyLossInputs, hp):
  """DPPO-Binary-KL: as DPPO-TV with the Bernoulli KL of the sampled token's probability."""
  inputs.check("dppo_kl")
  loss, masked = dppo_surrogate(inputs.logp_BxT, inputs.old_logp_BxT, inputs.advantages_BxT,
                                inputs.mask_BxT, "kl", hp["dppo_kl_low"], hp["dppo_kl_high"],
                                hp["dppo_ratio_cap"])
  return loss, loss_metrics(inputs, masked)


@register_policy_loss("tis", hparams={
    "tis_cap": (2.0, 0.0, INF, True, True, "truncation C of the importance weight"),
})
def truncated_is_loss(inputs: PolicyLossInputs, hp):
  """The plain policy gradient with a detached, truncated importance weight min(ρ, C)."""
  inputs.check("tis")
  loss, truncated = truncated_is_surrogate(inputs.logp_BxT, inputs.old_logp_BxT,
                                           inputs.advantages_BxT, inputs.mask_BxT,
                                           hp["tis_cap"])
  return loss, loss_metrics(inputs, truncated)
