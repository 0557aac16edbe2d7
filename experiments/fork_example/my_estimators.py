"""A research fork in one file: a new advantage estimator and a new policy loss.

Each is one function with the registry's signature and one decorator line that carries its
facts; a config imports this file (`config.imports`) and selects them by name
(config.advantage = "rank", config.policy_loss = "cispo"):

    python experiments/sweep.py --config experiments/fork_example/sweep_config.py
    python experiments/train.py --config experiments/fork_example/rank_kl_config.py

"rank" reads the scores only: a KL penalty in the reward (config.kl_placement = "reward") is
added by the registry, so the fork cannot drop it. "cispo" brings its own swept
hyperparameter, `cispo_eps_high`, without touching pg's hyperparameter table.
"""

import jax
import jax.numpy as jnp

import pg


@pg.register_advantage("rank", min_group_size=2)
def rank_advantages(inputs: pg.AdvantageInputs, hp, state) -> pg.AdvantageOutputs:
  """A_i = 2·rank_i/(G − 1) − 1: the score's rank within its group of G, centred and scaled to
  [−1, 1] (ties share their mean rank). Like GRPO it ignores the scores' scale; unlike GRPO it
  stays bounded when a group's scores barely differ."""
  inputs.check("rank")
  G = inputs.group_size
  r_PxG = jnp.asarray(inputs.scores_B, jnp.float32).reshape(-1, G)
  below_PxG = jnp.sum(r_PxG[:, :, None] > r_PxG[:, None, :], axis=-1)
  ties_PxG = jnp.sum(r_PxG[:, :, None] == r_PxG[:, None, :], axis=-1) - 1
  adv_B = (2.0 * (below_PxG + 0.5 * ties_PxG) / (G - 1) - 1.0).reshape(-1)
  mask_BxT = jnp.asarray(inputs.mask_BxT, jnp.float32)
  returns_BxT = pg.discounted_returns(pg.per_token_rewards(inputs.scores_B, mask_BxT), mask_BxT,
                                      hp["gamma"])
  return pg.AdvantageOutputs(adv_B[:, None] * mask_BxT, returns_BxT, state)


@pg.register_policy_loss("cispo", hparams={
    "cispo_eps_high": (0.2, 0.0, float("inf"), False, True, "CISPO's weight cap 1 + ε")})
def cispo_loss(inputs: pg.PolicyLossInputs, hp):
  """ℓ_t = −sg(min(ρ_t, 1 + ε))·A_t·log π(y_t | y_<t), ρ_t = π/π_old, ε = hp["cispo_eps_high"]
  (CISPO, MiniMax-M1, 2025): the importance weight is clipped, never the gradient, so no token
  loses its gradient the way PPO's clipped tokens do. On-policy (ρ = 1) it is REINFORCE."""
  inputs.check("cispo")
  log_ratio_BxT = jnp.clip(jax.lax.stop_gradient(inputs.logp_BxT) - inputs.old_logp_BxT,
                           -20.0, 20.0)
  ratio_BxT = jnp.exp(log_ratio_BxT)
  weight_BxT = jnp.minimum(ratio_BxT, 1.0 + hp["cispo_eps_high"])
  adv_BxT = jax.lax.stop_gradient(inputs.advantages_BxT)
  loss_BxT = -weight_BxT * adv_BxT * inputs.logp_BxT * inputs.mask_BxT
  clipped_BxT = (ratio_BxT > 1.0 + hp["cispo_eps_high"]).astype(jnp.float32)
  return loss_BxT, {"clip_fraction": pg.masked_mean(clipped_BxT, inputs.mask_BxT),
                    "ratio_mean": pg.masked_mean(ratio_BxT, inputs.mask_BxT)}
