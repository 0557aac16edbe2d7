"""Model FLOPs of one update, counted from the config (the MFU numerator).

A matmul of [m, k] by [k, n] is 2mkn FLOPs. Per token, a forward pass through the policy costs

    f = 2·(L·12·d² + d·V) + L·4·d·S

(QKV, attention output and a 4× MLP: 12d² weights per layer; the LM head; QKᵀ and AV over S
attended positions). A backward pass costs twice its forward. One update is then:
prefill over P prompt tokens, T decode steps (each attending over the cache of max_len
positions, as the compiled sampler does), a scoring forward over P + T tokens for the values
when there is a critic (the old log-probs come from the sampler), one for π_ref when a KL
penalty is on (a separate critic doubles every forward it joins), and ppo_epochs × (forward + backward) over P + T tokens. Embedding lookups,
layer norms, softmaxes and the optimizer are left out, as usual for MFU.
"""

from __future__ import annotations


def forward_flops_per_token(d_model, num_layers, vocab_size, attended, with_head=True):
  dense = num_layers * 12 * d_model * d_model + (d_model * vocab_size if with_head else 0)
  return 2 * dense + num_layers * 4 * d_model * attended


def update_flops(config, task) -> float:
  """Model FLOPs of one update for one seed."""
  m = config.model
  B = config.num_prompts * config.group_size
  P, T = task.prompt_len, task.max_new_tokens
  S = P + T
  f = lambda attended, head=True: forward_flops_per_token(m.d_model, m.num_layers,
                                                          task.vocab_size, attended, head)
  # Causal attention over a full sequence attends to S positions in the compiled kernel too.
  full_seq = S * f(S)
  critic = S * f(S, head=False) if m.value_head == "separate" else 0.0
  sampling = P * f(S) + T * f(S)
  has_critic = m.value_head != "none"
  scoring = ((full_seq + critic) if has_critic else 0.0) + (
      full_seq if config.kl_placement != "none" else 0.0)
  training = config.ppo_epochs * 3 * (full_seq + critic)
  return float(B * (sampling + scoring + training))
