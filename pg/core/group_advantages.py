"""Group-based advantage estimators of 2025–26: REINFORCE++-baseline, OPO, GRPO pass@k, MaxRL,
ReMax and GDPO. Rows of one prompt's G samples are consecutive; R_i is sample i's score, |y_i|
its number of generated tokens, μ_g and σ_g the mean and Bessel std of its group's scores.

    reinforce_pp_baseline  r_t = (R − μ_g)·1[t = last] − β kl_t, G_t = Σ_{s≥t} γ^{s−t} r_s,
                           A = whiten(G) over every generated token of the batch
                           (REINFORCE++ with a group baseline: Hu et al., 2025; OpenRLHF, verl)
    opo                    A = R − b, b = Σ_g |y_j| R_j / Σ_g |y_j|: the length-weighted mean,
                           the variance-optimal constant baseline when ‖∇log π(y)‖² ∝ |y|
                           (OPO: Hao et al., 2025)
    grpo_passk             only each group's best sample (the first, on ties) gets
                           A = (R_max − R_second)/(σ_g + ε), the others 0 (pass@k training:
                           Chen et al., 2025; verl's grpo_passk)
    maxrl                  A = (R − μ_g)/(μ_g + ε), 0 where μ_g ≤ ε: for 0/1 rewards the
                           gradient of log p(success) instead of p (MaxRL: Tajwar et al., 2026)
    remax                  A = R − R_greedy, the score of a greedy response to the same prompt
                           as the baseline (ReMax: Li et al., 2023); the train step draws it
    gdpo                   A = whiten(Σ_k w_k (R_k − μ_{g,k})/(σ_{g,k} + ε)) over the batch's
                           tokens: each reward component normalised within its group before
                           the weighted sum (GDPO: NVIDIA, 2026), so a low-variance component
                           is not drowned by a high-variance one

Sequence-level estimators leave the KL penalty to the registry (`pg.registry`); the whitening
ones fold it into their per-token rewards before whitening (`handles_kl=True`), as OpenRLHF
does. `returns_BxT` are the γ-discounted returns of r = R·1[last] − β kl (critic targets).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pg.core import _checks, masked, multistep, rewards
from pg.core.baselines import grpo_advantages
from pg.core.registry import AdvantageInputs, AdvantageOutputs, register_advantage


def _grouped(x_B, group_size):
  return jnp.asarray(x_B, jnp.float32).reshape(-1, group_size)


def _from_sequence(adv_B, inputs, hp, state):
  m = jnp.asarray(inputs.mask_BxT, jnp.float32)
  r_BxT = rewards.per_token_rewards(inputs.scores_B, m, inputs.kl_BxT, hp["kl_coef"])
  return AdvantageOutputs(adv_B[:, None] * m, multistep.discounted_returns(r_BxT, m, hp["gamma"]),
                          state)


def opo_advantages(scores_B, lengths_B, group_size: int):
  """A_i = R_i − Σ_j |y_j| R_j / Σ_j |y_j| within each group, `[B]` (a group with no tokens
  uses the plain mean)."""
  fn = "opo_advantages"
  _checks.rank(fn, "scores_B", scores_B, 1)
  _checks.same_shape(fn, {"scores_B": scores_B, "lengths_B": lengths_B})
  _checks.group_size(fn, scores_B.shape[0], group_size, minimum=2)
  r_PxG, n_PxG = _grouped(scores_B, group_size), _grouped(lengths_B, group_size)
  total_P = jnp.sum(n_PxG, axis=1, keepdims=True)
  b_P = jnp.where(total_P > 0, jnp.sum(n_PxG * r_PxG, axis=1, keepdims=True)
                  / jnp.maximum(total_P, 1e-30), jnp.mean(r_PxG, axis=1, keepdims=True))
  return (r_PxG - b_P).reshape(-1)


def passk_advantages(scores_B, group_size: int, eps=1e-6):
  """(R_max − R_second)/(σ_g + ε) on each group's first best sample, 0 elsewhere, `[B]`."""
  fn = "passk_advantages"
  _checks.rank(fn, "scores_B", scores_B, 1)
  _checks.group_size(fn, scores_B.shape[0], group_size, minimum=2)
  r_PxG = _grouped(scores_B, group_size)
  top2_Px2, _ = jax.lax.top_k(r_PxG, 2)
  best_P = jnp.argmax(r_PxG, axis=1)  # the first maximum
  gap_P = (top2_Px2[:, 0] - top2_Px2[:, 1]) / (jnp.std(r_PxG, axis=1, ddof=1) + eps)
  return (jax.nn.one_hot(best_P, group_size) * gap_P[:, None]).reshape(-1)


def maxrl_advantages(scores_B, group_size: int, eps=1e-6):
  """(R − μ_g)/(μ_g + ε) where μ_g > ε, else 0, `[B]`."""
  fn = "maxrl_advantages"
  _checks.rank(fn, "scores_B", scores_B, 1)
  _checks.group_size(fn, scores_B.shape[0], group_size, minimum=2)
  r_PxG = _grouped(scores_B, group_size)
  mu_P = jnp.mean(r_PxG, axis=1, keepdims=True)
  adv = jnp.where(mu_P > eps, (r_PxG - mu_P) / (mu_P + eps), 0.0)
  return adv.reshape(-1)


@register_advantage("reinforce_pp_baseline", min_group_size=2, handles_kl=True)
def reinforce_pp_baseline(inputs: AdvantageInputs, hp, state):
  """REINFORCE++-baseline: group-mean baseline, KL per token, whitened over the batch."""
  inputs.check("reinforce_pp_baseline")
  m = jnp.asarray(inputs.mask_BxT, jnp.float32)
  r_PxG = _grouped(inputs.scores_B, inputs.group_size)
  centred_B = (r_PxG - jnp.mean(r_PxG, axis=1, keepdims=True)).reshape(-1)
  g_BxT = multistep.discounted_returns(
      rewards.per_token_rewards(centred_B, m, inputs.kl_BxT, hp["kl_coef"]), m, hp["gamma"])
  returns_BxT = multistep.discounted_returns(
      rewards.per_token_rewards(inputs.scores_B, m, inputs.kl_BxT, hp["kl_coef"]), m,
      hp["gamma"])
  return AdvantageOutputs(masked.masked_whiten(g_BxT, m, eps=hp["adv_eps"]), returns_BxT, state)


@register_advantage("opo", min_group_size=2)
def opo(inputs: AdvantageInputs, hp, state):
  """OPO: the length-weighted group baseline."""
  inputs.check("opo")
  lengths_B = jnp.sum(jnp.asarray(inputs.mask_BxT, jnp.float32), axis=1)
  return _from_sequence(opo_advantages(jnp.asarray(inputs.scores_B, jnp.float32), lengths_B,
                                       inputs.group_size), inputs, hp, state)


@register_advantage("grpo_passk", min_group_size=2)
def grpo_passk(inputs: AdvantageInputs, hp, state):
  """GRPO pass@k: only the group's best sample is pushed, by its margin over the runner-up."""
  inputs.check("grpo_passk")
  return _from_sequence(passk_advantages(inputs.scores_B, inputs.group_size, hp["adv_eps"]),
                        inputs, hp, state)


@register_advantage("maxrl", min_group_size=2)
def maxrl(inputs: AdvantageInputs, hp, state):
  """MaxRL: the group-mean baseline divided by the group mean (p-normalisation)."""
  inputs.check("maxrl")
  return _from_sequence(maxrl_advantages(inputs.scores_B, inputs.group_size, hp["adv_eps"]),
                        inputs, hp, state)


@register_advantage("remax", needs_greedy=True)
def remax(inputs: AdvantageInputs, hp, state):
  """ReMax: A = R − R_greedy (`inputs.baseline_scores_B`, drawn by the train step)."""
  inputs.check("remax")
  if inputs.baseline_scores_B is None:
    raise ValueError("advantage estimator 'remax' needs `baseline_scores_B` (the score of a "
                     "greedy response to each row's prompt); got None.")
  adv_B = (jnp.asarray(inputs.scores_B, jnp.float32)
           - jnp.asarray(inputs.baseline_scores_B, jnp.float32))
  return _from_sequence(adv_B, inputs, hp, state)


@register_advantage("gdpo", min_group_size=2, handles_kl=True, needs_components=True)
def gdpo(inputs: AdvantageInputs, hp, state):
  """GDPO: each component GRPO-normalised in its group, weighted, summed, whitened."""
  inputs.check("gdpo")
  if inputs.components_KxB is None or inputs.component_weights_K is None:
    raise ValueError("advantage estimator 'gdpo' needs `components_KxB` and "
                     "`component_weights_K` (a task with reward components); got None.")
  m = jnp.asarray(inputs.mask_BxT, jnp.float32)
  norm_KxB = jax.vmap(lambda r_B: grpo_advantages(r_B, inputs.group_size, hp["adv_eps"]))(
      jnp.asarray(inputs.components_KxB, jnp.float32))
  summed_B = jnp.sum(jnp.asarray(inputs.component_weights_K, jnp.float32)[:, None] * norm_KxB,
                     axis=0)
  kl_BxT = (jnp.zeros_like(m) if inputs.kl_BxT is None
            else jnp.asarray(inputs.kl_BxT, jnp.float32))
  # The KL penalty's return-to-go joins before whitening, as for REINFORCE++.
  adv_BxT = (summed_B[:, None] * m
             + multistep.discounted_returns(-hp["kl_coef"] * kl_BxT * m, m, 1.0))
  returns_BxT = multistep.discounted_returns(
      rewards.per_token_rewards(inputs.scores_B, m, inputs.kl_BxT, hp["kl_coef"]), m,
      hp["gamma"])
  return AdvantageOutputs(masked.masked_whiten(adv_BxT, m, eps=hp["adv_eps"]), returns_BxT,
                          state)
