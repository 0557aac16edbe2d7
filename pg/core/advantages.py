"""Registered advantage estimators: fn(inputs: AdvantageInputs, hp, state) -> AdvantageOutputs.

Per-token rewards are r_t = −β·kl_t + R·1[t = last generated] (`pg.rewards`), with β =
hp["kl_coef"] and kl_t = `inputs.kl_BxT` (None: no penalty).

Sequence-level estimators (none, moving_average, group_mean, rloo, grpo, grpo_population)
subtract their baseline from the score only; the registry then adds the KL part of the
return-to-go (`pg.registry`: they do not register `handles_kl`), so token t's advantage is

    A_t = (R − b) − β Σ_{s ≥ t} kl_s

(undiscounted: a response is one trajectory). The KL return-to-go is what gives the exact
gradient of the sequence KL (see `pg.kl`). Token-level estimators (`handles_kl=True`) use r_t
directly:

    reinforce_pp  A = whiten_batch(G), G_t = Σ_{s ≥ t} γ^{s−t} r_s   (REINFORCE++)
    value         A_t = G_t − V(s_t)                                   (learned baseline)
    gae           A = GAE(γ, λ) over r and V                           (PPO's default)

`returns_BxT` (critic targets) are the γ-discounted returns of r (λ-returns for "gae"),
always computed before any whitening.
"""

from __future__ import annotations

import jax.numpy as jnp

from pg.core import baselines
from pg.core import masked
from pg.core import multistep
from pg.core import rewards
from pg.core.registry import AdvantageInputs, AdvantageOutputs, register_advantage


def token_rewards(inputs: AdvantageInputs, hp):
  return rewards.per_token_rewards(inputs.scores_B, inputs.mask_BxT, inputs.kl_BxT,
                                   hp["kl_coef"])


def _mask(inputs):
  return jnp.asarray(inputs.mask_BxT, jnp.float32)


def _from_sequence_advantages(adv_B, inputs: AdvantageInputs, hp, state) -> AdvantageOutputs:
  """A_t = A for every generated token; returns are the γ-discounted returns of the score (the
  registry adds the KL penalty's part to both)."""
  m = _mask(inputs)
  returns_BxT = multistep.discounted_returns(token_rewards(inputs, hp), m, hp["gamma"])
  return AdvantageOutputs(adv_B[:, None] * m, returns_BxT, state)


def _needs_values(name, inputs):
  if inputs.values_BxT is None:
    raise ValueError(f"advantage estimator {name!r} needs `values_BxT` (a critic's V(s_t)); "
                     f"got None.")


@register_advantage("none")
def no_baseline(inputs: AdvantageInputs, hp, state):
  """A = R (the vanilla score-function estimator)."""
  inputs.check("none")
  return _from_sequence_advantages(jnp.asarray(inputs.scores_B, jnp.float32), inputs, hp, state)


@register_advantage("moving_average")
def moving_average(inputs: AdvantageInputs, hp, state):
  """A = R − b, b an EMA of past batch means (hp["baseline_decay"]); state updated."""
  inputs.check("moving_average")
  adv_B, state = baselines.moving_average_advantages(inputs.scores_B, state,
                                                     hp["baseline_decay"])
  return _from_sequence_advantages(adv_B, inputs, hp, state)


@register_advantage("group_mean", min_group_size=2)
def group_mean(inputs: AdvantageInputs, hp, state):
  """A_i = R_i − mean_g R."""
  inputs.check("group_mean")
  adv_B = baselines.group_mean_advantages(inputs.scores_B, inputs.group_size)
  return _from_sequence_advantages(adv_B, inputs, hp, state)


@register_advantage("rloo", min_group_size=2)
def rloo(inputs: AdvantageInputs, hp, state):
  """A_i = R_i − mean_{j≠i} R_j (G ≥ 2)."""
  inputs.check("rloo")
  adv_B = baselines.rloo_advantages(inputs.scores_B, inputs.group_size)
  return _from_sequence_advantages(adv_B, inputs, hp, state)


@register_advantage("grpo", min_group_size=2)
def grpo(inputs: AdvantageInputs, hp, state):
  """A_i = (R_i − mean_g R)/(std_g R + ε), Bessel std (TRL, OpenRLHF, verl); ε = hp["adv_eps"]."""
  inputs.check("grpo")
  adv_B = baselines.grpo_advantages(inputs.scores_B, inputs.group_size, hp["adv_eps"],
                                    unbiased_std=True)
  return _from_sequence_advantages(adv_B, inputs, hp, state)


@register_advantage("grpo_population", min_group_size=2)
def grpo_population(inputs: AdvantageInputs, hp, state):
  """GRPO with the population std (divides by G, as EasyDeL)."""
  inputs.check("grpo_population")
  adv_B = baselines.grpo_advantages(inputs.scores_B, inputs.group_size, hp["adv_eps"],
                                    unbiased_std=False)
  return _from_sequence_advantages(adv_B, inputs, hp, state)


@register_advantage("reinforce_pp", handles_kl=True)
def reinforce_pp(inputs: AdvantageInputs, hp, state):
  """REINFORCE++: γ-discounted per-token returns, whitened over every token of the batch."""
  inputs.check("reinforce_pp")
  m = _mask(inputs)
  returns_BxT = multistep.discounted_returns(token_rewards(inputs, hp), m, hp["gamma"])
  adv_BxT = masked.masked_whiten(returns_BxT, m, eps=hp["adv_eps"])
  return AdvantageOutputs(adv_BxT, returns_BxT, state)


@register_advantage("value", needs_critic=True, handles_kl=True)
def value_baseline(inputs: AdvantageInputs, hp, state):
  """A_t = G_t − V(s_t): the return minus a learned value (GAE with λ = 1)."""
  _needs_values("value", inputs)
  inputs.check("value")
  m = _mask(inputs)
  returns_BxT = multistep.discounted_returns(token_rewards(inputs, hp), m, hp["gamma"])
  adv_BxT = (returns_BxT - jnp.asarray(inputs.values_BxT, jnp.float32)) * m
  return AdvantageOutputs(adv_BxT, returns_BxT, state)


@register_advantage("gae", needs_critic=True, handles_kl=True)
def gae(inputs: AdvantageInputs, hp, state):
  """GAE(γ, λ) from per-token rewards and the critic; returns are the λ-returns A + V."""
  _needs_values("gae", inputs)
  inputs.check("gae")
  m = _mask(inputs)
  v = jnp.asarray(inputs.values_BxT, jnp.float32)
  adv_BxT = multistep.generalized_advantage_estimation(token_rewards(inputs, hp), v, m,
                                                       hp["gamma"], hp["lam"])
  return AdvantageOutputs(adv_BxT, (adv_BxT + v) * m, state)
