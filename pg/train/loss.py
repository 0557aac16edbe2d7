"""The training loss of one gradient batch: the registered policy loss, aggregated, plus the
entropy bonus, the clipped value loss (with a critic) and a KL term (kl_placement = "loss").

    L = agg(ℓ_policy) + c_H · agg(−H) + c_V · token-mean(ℓ_value) + β · agg(kl)

`batch` holds, per row: `prompts` (the prompt of each row, `[B, P]`), `tokens`, `mask`,
`old_logp`, `advantages` (`[B, T]`), by config `rc_weight` (rollout-correction weights, `[B, T]`),
`loss_key` (a PRNG key per row, `[B, 2]`: the policy loss
gets its minibatch's first), and by config `old_values` and `returns` (a critic) and `ref_logp`
(a KL term in the loss).
"""

from __future__ import annotations

import pg


def make_loss(config, policy, aggregation: str, share_prompts: bool, prompt_mask=None):
  """(forward, loss_fn): forward(params, prompts_BxP, tokens_BxT, temperature) ->
  (logp_BxT, entropy_BxT, values_BxT | None), with each group's prompt run once when
  `share_prompts` (rows then come in whole groups of config.group_size); and
  loss_fn(params, batch, hp) -> (loss, metrics). `prompt_mask(prompts_NxP)` gives left-padded
  prompts' masks (`Task.prompt_mask`; None or returning None: every prompt token is real)."""
  G = config.group_size
  policy_loss_fn = pg.get_policy_loss(config.policy_loss)

  def forward(params, prompts_BxP, tokens_BxT, temperature):
    prompts = prompts_BxP[::G] if share_prompts else prompts_BxP
    mask = None if prompt_mask is None else prompt_mask(prompts)
    if mask is None:
      return policy.response_stats(params, prompts, tokens_BxT, temperature)
    return policy.response_stats(params, prompts, tokens_BxT, temperature, mask)

  def loss_fn(params, batch, hp):
    logp, entropy, values = forward(params, batch["prompts"], batch["tokens"], hp["temperature"])
    mask = batch["mask"]
    key = batch["loss_key"][0] if "loss_key" in batch else None  # (the minibatch's first row's)
    inputs = pg.PolicyLossInputs(logp, batch["old_logp"], batch["advantages"], mask, key)
    policy_loss_BxT, loss_metrics = policy_loss_fn(inputs, hp)
    if "rc_weight" in batch:  # rollout correction (pg.core.rollout_correction), no gradient
      policy_loss_BxT = policy_loss_BxT * batch["rc_weight"]
    loss = pg.aggregate_loss(policy_loss_BxT, mask, aggregation)
    entropy_term = pg.aggregate_loss(pg.entropy_bonus(entropy, mask), mask, aggregation)
    loss = loss + hp["entropy_coef"] * entropy_term
    metrics = {"pg_loss": loss, "entropy": pg.masked_mean(entropy, mask), **loss_metrics}
    if policy.has_values:
      value_loss = pg.aggregate_loss(
          pg.clipped_value_loss(values, batch["old_values"], batch["returns"], mask,
                                hp["value_clip"]), mask, "token-mean")
      loss = loss + hp["value_coef"] * value_loss
      metrics["value_loss"] = value_loss
    if config.kl_placement == "loss":
      kl_term = pg.aggregate_loss(pg.kl_estimate(logp, batch["ref_logp"], config.kl_estimator),
                                  mask, aggregation)
      loss = loss + hp["kl_coef"] * kl_term
    metrics["loss"] = loss
    return loss, metrics

  return forward, loss_fn
