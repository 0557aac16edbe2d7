"""A research fork in one file: a new advantage estimator and a new policy loss.

Each is one function with the registry's signature and one decorator line that carries its
facts; a config imports this file (`config.imports`) and selects them by name
(config.advantage = "rank", config.policy_loss = "w_reinforce"):

    python experiments/sweep.py --config experiments/fork_example/sweep_config.py
    python experiments/train.py --config experiments/fork_example/rank_kl_config.py

"rank" reads the scores only: a KL penalty in the reward (config.kl_placement = "reward") is
added by the registry, so the fork cannot drop it. "w_reinforce" brings its own swept
hyperparameter, `w_reinforce_lambda`, without touching pg's hyperparameter table.
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


@pg.register_policy_loss("w_reinforce", hparams={
    "w_reinforce_lambda": (0.1, 0.0, float("inf"), False, True,
                           "W-REINFORCE weight of positive samples")})
def w_reinforce_loss(inputs: pg.PolicyLossInputs, hp):
  """ℓ_t = −w_t·A_t·log π(y_t | y_<t), w_t = λ where A_t > 0 and 1 elsewhere, λ =
  hp["w_reinforce_lambda"] (W-REINFORCE: Zhu et al., 2025, "The Surprising Effectiveness of
  Negative Reinforcement in LLM Reasoning"): rewarded samples are down-weighted, so most of
  the update pushes probability away from the failures. λ = 1 is REINFORCE."""
  inputs.check("w_reinforce")
  adv_BxT = jax.lax.stop_gradient(jnp.asarray(inputs.advantages_BxT, jnp.float32))
  weight_BxT = jnp.where(adv_BxT > 0, hp["w_reinforce_lambda"], 1.0)
  loss_BxT = -weight_BxT * adv_BxT * inputs.logp_BxT * inputs.mask_BxT
  positive_BxT = (adv_BxT > 0).astype(jnp.float32)
  return loss_BxT, {"positive_fraction": pg.masked_mean(positive_BxT, inputs.mask_BxT)}
