"""A research fork in one file: a new advantage estimator and a new policy loss.

Each is one function with the registry's signature and one decorator line; a config then
selects it by name (config.advantage = "rank", config.policy_loss = "cispo"), and a sweep runs
it against the built-in ones:

    python experiments/sweep.py --config experiments/fork_example/sweep_config.py
"""

import jax
import jax.numpy as jnp

import pg


@pg.register_advantage("rank")
def rank_advantages(inputs: pg.AdvantageInputs, hp, state) -> pg.AdvantageOutputs:
  """A_i = 2·rank_i/(G − 1) − 1: the score's rank within its group of G, centred and scaled to
  [−1, 1] (ties share their mean rank). Like GRPO it ignores the scores' scale; unlike GRPO it
  stays bounded when a group's scores barely differ. KL penalties enter as in the built-ins."""
  inputs.check("rank")
  G = inputs.group_size
  if G < 2:
    raise ValueError(f"advantage 'rank' needs group_size >= 2, got {G}.")
  r_PxG = jnp.asarray(inputs.scores_B, jnp.float32).reshape(-1, G)
  below_PxG = jnp.sum(r_PxG[:, :, None] > r_PxG[:, None, :], axis=-1)
  ties_PxG = jnp.sum(r_PxG[:, :, None] == r_PxG[:, None, :], axis=-1) - 1
  adv_B = (2.0 * (below_PxG + 0.5 * ties_PxG) / (G - 1) - 1.0).reshape(-1)
  mask_BxT = jnp.asarray(inputs.mask_BxT, jnp.float32)
  adv_BxT = adv_B[:, None] * mask_BxT
  if inputs.kl_BxT is not None:  # the KL part of the return-to-go, as the built-ins do
    adv_BxT += pg.discounted_returns(-hp["kl_coef"] * inputs.kl_BxT * mask_BxT, mask_BxT, 1.0)
  rewards_BxT = pg.per_token_rewards(inputs.scores_B, mask_BxT, inputs.kl_BxT, hp["kl_coef"])
  returns_BxT = pg.discounted_returns(rewards_BxT, mask_BxT, hp["gamma"])
  return pg.AdvantageOutputs(adv_BxT, returns_BxT, state)


@pg.register_policy_loss("cispo")
def cispo_loss(inputs: pg.PolicyLossInputs, hp):
  """ℓ_t = −sg(min(ρ_t, 1 + ε_high))·A_t·log π(y_t | y_<t), ρ_t = π/π_old (CISPO, MiniMax-M1,
  2025): the importance weight is clipped, never the gradient, so no token loses its gradient
  the way PPO's clipped tokens do. On-policy (ρ = 1) it is REINFORCE."""
  inputs.check("cispo")
  log_ratio_BxT = jnp.clip(jax.lax.stop_gradient(inputs.logp_BxT) - inputs.old_logp_BxT,
                           -20.0, 20.0)
  ratio_BxT = jnp.exp(log_ratio_BxT)
  weight_BxT = jnp.minimum(ratio_BxT, 1.0 + hp["ppo_eps_high"])
  adv_BxT = jax.lax.stop_gradient(inputs.advantages_BxT)
  loss_BxT = -weight_BxT * adv_BxT * inputs.logp_BxT * inputs.mask_BxT
  clipped_BxT = (ratio_BxT > 1.0 + hp["ppo_eps_high"]).astype(jnp.float32)
  return loss_BxT, {"clip_fraction": pg.masked_mean(clipped_BxT, inputs.mask_BxT),
                    "ratio_mean": pg.masked_mean(ratio_BxT, inputs.mask_BxT)}
