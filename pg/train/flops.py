"""Model FLOPs of one update, counted from the config as the compiled program does them (the
MFU numerator).

A matmul of [m, k] by [k, n] is 2mkn FLOPs. The policy says what one token costs
(`Policy.token_flops(a)`: its trunk attending over `a` positions, its LM head, a separate
critic's trunk); for the GPT policy trunk(a) = 2·L·12·d² + L·4·d·a. A backward pass costs twice
its forward.
With N prompts of P tokens, G samples each (B = N·G rows), T response slots and S = P + T,
one update is:

- sampling: a prefill of the N prompts (P tokens each, attending over cache block 0 and
  themselves, head on every position), then T decode steps of B rows, each attending over the
  cache blocks up to its own and itself (`pg.sampler`: block 0 holds the prompt and the first
  DECODE_BLOCK slots, each later block DECODE_BLOCK slots);
- a trainer forward over the response positions: with `pg.train.build.shares_prompts`, the N prompts
  (attending P) and B rows of T − 1 response tokens (attending P + T − 1); else B rows of S
  tokens (attending S, as the compiled causal kernel does); the head on the T predicting
  positions. A separate critic adds the trunk part again;
- a scoring forward for the values when there is a critic, one for π_ref when a KL penalty is on
  (the old log-probs come from the sampler), and ppo_epochs × (forward + backward).

Embedding lookups, layer norms, softmaxes and the optimizer are left out, as usual for MFU.
"""

from __future__ import annotations

from pg.policy.sampler import cache_blocks
from pg.train.build import shares_prompts


def sampling_flops(config, task, policy) -> float:
  """Model FLOPs of one update's sampling for one seed: the prefill of each prompt and every
  decode step (each reading the cache blocks up to its own)."""
  N, G = config.num_prompts, config.group_size
  B = N * G
  P, T = task.prompt_len, task.max_new_tokens
  trunk = lambda attended: policy.token_flops(attended).trunk
  head = policy.token_flops(0).head
  segments, sizes = cache_blocks(P, T, P + T)  # the model's context is P + T (pg.train.build)
  sampling = N * P * (trunk(sizes[0] + P) + head)  # prefill: block 0 and the prompt itself
  for j, (start, stop) in enumerate(segments):  # a step in segment j reads blocks 0..j
    sampling += B * (stop - start) * (trunk(sum(sizes[:j + 1]) + 1) + head)
  return float(sampling)


def update_flops(config, task, policy) -> float:
  """Model FLOPs of one update for one seed, from the policy's per-token count
  (`policy.token_flops`)."""
  N, G = config.num_prompts, config.group_size
  B = N * G
  P, T = task.prompt_len, task.max_new_tokens
  S = P + T
  trunk = lambda attended: policy.token_flops(attended).trunk
  critic = lambda attended: policy.token_flops(attended).critic
  head = policy.token_flops(0).head
  if shares_prompts(config, policy):
    trainer = lambda f: N * P * f(P) + B * (T - 1) * f(P + T - 1)
  else:
    trainer = lambda f: B * S * f(S)
  forward = trainer(trunk) + trainer(critic) + B * T * head
  scoring = (policy.has_values + (config.kl_placement != "none")) * forward
  training = config.ppo_epochs * 3 * forward
  return sampling_flops(config, task, policy) + float(scoring + training)
