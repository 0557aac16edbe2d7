"""`pg.train.flops` and the policy's per-token FLOP count against XLA's own count."""

import os

import jax
import jax.numpy as jnp
import pytest

from pg.policy import gpt as model
from pg.policy import sampler
from pg import train
from tiny_config import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("d_model,num_layers,vocab,seq", [(64, 2, 16, 10), (128, 2, 64, 32)])
def test_flop_count_matches_xla_for_a_forward_pass(d_model, num_layers, vocab, seq):
  cfg = model.ModelConfig(vocab_size=vocab, max_len=seq, num_layers=num_layers,
                          d_model=d_model, num_heads=4, value_head="none")
  params = model.init_params(cfg, jax.random.PRNGKey(0))
  tokens = jnp.zeros((8, seq), jnp.int32)
  compiled = jax.jit(lambda p, t: model.PolicyValue(cfg).apply(p, t)[0]).lower(
      params, tokens).compile()
  per_token = model.GPTPolicy(cfg).token_flops(seq)
  ours = 8 * seq * (per_token.trunk + per_token.head)
  # XLA also counts elementwise work (layer norms, softmax, GELU) that MFU leaves out.
  assert 0.9 < ours / compiled.cost_analysis()["flops"] <= 1.0


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_flop_count_of_decode_steps_matches_xla_for_each_cache_block(monkeypatch):
  """pg.flops charges a decode step at slot t for the cache blocks up to its own: check that
  against XLA's count of one compiled step per slot, with blocks of 2 slots."""
  from pg.train import flops
  monkeypatch.setattr(sampler, "DECODE_BLOCK", 2)
  B, P, T = 8, 4, 6
  cfg = model.ModelConfig(vocab_size=64, max_len=P + T, num_layers=2, d_model=128, num_heads=4,
                          value_head="none")
  params = model.init_params(cfg, jax.random.PRNGKey(0))
  cache = model.init_cache(cfg, B, (P + 2, 2, 2))
  net = model.PolicyValue(cfg)
  policy = model.GPTPolicy(cfg)
  trunk = lambda a: policy.token_flops(a).trunk + policy.token_flops(a).head
  charged = []
  for t in range(T):
    step = jax.jit(lambda p, c, j=t // 2: net.apply(p, jnp.zeros((B, 1), jnp.int32), P + t, c, j,
                                                    method=model.PolicyValue.decode)[0])
    xla = step.lower(params, cache).compile().cost_analysis()["flops"]
    reach = P + 2 * (t // 2 + 1)  # positions in blocks 0..t//2
    assert 0.9 < B * trunk(reach + 1) / xla <= 1.0, t
    charged.append(B * trunk(reach + 1))
  # update_flops uses the same reach: its sampling part, less the prefill, is their sum.
  config = tiny(num_prompts=2, group_size=4, model={"num_layers": 2, "d_model": 128,
                                                    "num_heads": 4, "value_head": "none"})
  with config.unlocked():
    config.task.name = "target_token"
    config.task.options = {"vocab_size": 64, "prompt_len": P, "length": T, "target": 3}
  task, policy = train.build(config)
  total = flops.update_flops(config, task, policy)
  monkeypatch.setattr(sampler, "DECODE_BLOCK", 10**6)  # one block: every step reads all of it
  one_block = flops.update_flops(config, task, policy)
  trunk_only = lambda a: policy.token_flops(a).trunk
  prefill = 2 * P * (trunk_only(P + T + P) - trunk_only(P + 2 + P))  # block 0 and the prompt
  assert one_block - total == pytest.approx(
      prefill + sum(B * trunk(P + T + 1) - c for c in charged))
