"""Model FLOPs of one update, counted from the config as the compiled program does them (the
MFU numerator).

A matmul of [m, k] by [k, n] is 2mkn FLOPs. A token through the trunk costs

    trunk(a) = 2·L·12·d² + L·4·d·a

(QKV, attention output and a 4× MLP: 12d² weights per layer; QKᵀ and AV over `a` attended
positions) and the LM head 2·d·V where it is applied. A backward pass costs twice its forward.
With N prompts of P tokens, G samples each (B = N·G rows), T response slots and S = P + T,
one update is:

- sampling: a prefill of the N prompts (P tokens each, attending over cache block 0 and
  themselves, head on every position), then T decode steps of B rows, each attending over the
  cache blocks up to its own and itself (`pg.sampler`: block 0 holds the prompt and the first
  DECODE_BLOCK slots, each later block DECODE_BLOCK slots);
- a trainer forward over the response positions: with `pg.train.shares_prompts`, the N prompts
  (attending P) and B rows of T − 1 response tokens (attending P + T − 1); else B rows of S
  tokens (attending S, as the compiled causal kernel does); the head on the T predicting
  positions. A separate critic adds the trunk part again;
- a scoring forward for the values when there is a critic, one for π_ref when a KL penalty is on
  (the old log-probs come from the sampler), and ppo_epochs × (forward + backward).

Embedding lookups, layer norms, softmaxes and the optimizer are left out, as usual for MFU.
"""

from __future__ import annotations


def forward_flops_per_token(d_model, num_layers, vocab_size, attended, with_head=True):
  dense = num_layers * 12 * d_model * d_model + (d_model * vocab_size if with_head else 0)
  return 2 * dense + num_layers * 4 * d_model * attended


def update_flops(config, task) -> float:
  """Model FLOPs of one update for one seed."""
  from pg.train import shares_prompts  # pg.train imports this module's users
  m = config.model
  N, G = config.num_prompts, config.group_size
  B = N * G
  P, T = task.prompt_len, task.max_new_tokens
  S = P + T
  trunk = lambda attended: forward_flops_per_token(m.d_model, m.num_layers, task.vocab_size,
                                                   attended, with_head=False)
  head = 2 * m.d_model * task.vocab_size
  from pg.sampler import cache_blocks
  segments, sizes = cache_blocks(P, T, S)  # the model's context is P + T (pg.train)
  sampling = N * P * (trunk(sizes[0] + P) + head)  # prefill: block 0 and the prompt itself
  for j, (start, stop) in enumerate(segments):  # a step in segment j reads blocks 0..j
    sampling += B * (stop - start) * (trunk(sum(sizes[:j + 1]) + 1) + head)
  if shares_prompts(config):
    trainer_trunk = N * P * trunk(P) + B * (T - 1) * trunk(P + T - 1)
  else:
    trainer_trunk = B * S * trunk(S)
  critic = trainer_trunk if m.value_head == "separate" else 0.0
  forward = trainer_trunk + critic + B * T * head
  scoring = ((m.value_head != "none") + (config.kl_placement != "none")) * forward
  training = config.ppo_epochs * 3 * forward
  return float(sampling + scoring + training)
