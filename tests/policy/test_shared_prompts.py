"""A group's prompt run once for its G samples: the same numbers as running it G times.

The sampler's prefill and the trainer's forward passes (`PolicyValue.grouped_response_hidden_
and_values`) compute each prompt once per group; these tests hold them to the full forward.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pg.policy import attention
from pg.policy import gpt as model
from pg.policy import sampler
from pg import tasks
from pg import train
from tiny_config import tiny as tiny_config


def net_and_batch(value_head, N, G, P, T, seed=0):
  cfg = model.ModelConfig(vocab_size=11, max_len=P + T, num_layers=2, d_model=16, num_heads=2,
                          value_head=value_head)
  params = jax.jit(model.init_params, static_argnums=0)(cfg, jax.random.PRNGKey(seed))
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed + 1))
  prompts_NxP = jax.random.randint(k1, (N, P), 0, 11)
  responses_BxT = jax.random.randint(k2, (N * G, T), 0, 11)
  return cfg, params, prompts_NxP, responses_BxT


@functools.partial(jax.jit, static_argnums=2)
def _full_hidden_and_values(params, full_BxL, cfg):
  return model.PolicyValue(cfg).apply(params, full_BxL, method=model.PolicyValue.hidden_and_values)


def full_forward(cfg, params, prompts_NxP, responses_BxT):
  """The reference: every row's whole prompt ⧺ response, sliced to the predicting positions."""
  G = responses_BxT.shape[0] // prompts_NxP.shape[0]
  P = prompts_NxP.shape[1]
  full_BxL = jnp.concatenate([jnp.repeat(prompts_NxP, G, axis=0), responses_BxT], axis=1)
  h, v = _full_hidden_and_values(params, full_BxL, cfg)
  return h[:, P - 1:-1], None if v is None else v[:, P - 1:-1]


def grouped_forward(cfg, params, prompts_NxP, responses_BxT):
  return model.PolicyValue(cfg).apply(params, prompts_NxP, responses_BxT,
                                      method=model.PolicyValue.grouped_response_hidden_and_values)


_grouped_forward = jax.jit(grouped_forward, static_argnums=0)


SLOW = pytest.mark.slow  # default suite under 9 min; CI runs every case


@pytest.mark.parametrize("value_head,N,G,P,T", [
    ("none", 3, 2, 4, 5),
    *[pytest.param(head, 3, 2, 4, 5, marks=SLOW) for head in ("shared", "separate")],
    pytest.param("shared", 2, 1, 3, 4, marks=SLOW),   # groups of one
    ("shared", 2, 3, 1, 4),   # a one-token prompt
    pytest.param("shared", 2, 4, 3, 1, marks=SLOW),   # one response slot: the prompt alone
])
def test_grouped_forward_equals_the_full_forward(value_head, N, G, P, T):
  cfg, params, prompts, responses = net_and_batch(value_head, N, G, P, T)
  h, v = full_forward(cfg, params, prompts, responses)
  h2, v2 = _grouped_forward(cfg, params, prompts, responses)
  assert h2.shape == (N * G, T, cfg.d_model)
  np.testing.assert_allclose(h2, h, atol=3e-6)
  if value_head == "none":
    assert v is None and v2 is None
  else:
    assert v2.shape == (N * G, T)
    np.testing.assert_allclose(v2, v, atol=3e-6)


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_grouped_forward_has_the_same_gradient():
  cfg, params, prompts, responses = net_and_batch("shared", 3, 4, 5, 6)
  w_BxT = jax.random.normal(jax.random.PRNGKey(9), responses.shape)

  def loss(forward, p):
    h, v = forward(cfg, p, prompts, responses)
    return jnp.sum(w_BxT * (jnp.sum(h, axis=-1) + v))
  g_full = jax.jit(jax.grad(lambda p: loss(full_forward, p)))(params)
  g_grouped = jax.jit(jax.grad(lambda p: loss(grouped_forward, p)))(params)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                         g_grouped, g_full)
  # The prompt's own parameters (position embeddings of the prompt slots) get gradient from
  # all G rows of a group, not one.
  assert float(jnp.abs(g_full["params"]["trunk"]["pos_embed"]["embedding"][0]).sum()) > 0


def test_grouped_forward_refuses_a_batch_that_is_not_whole_groups():
  cfg, params, prompts, responses = net_and_batch("none", 3, 2, 4, 5)
  with pytest.raises(AssertionError, match="whole groups"):
    grouped_forward(cfg, params, prompts, responses[:5])


@pytest.mark.parametrize("G", [1, 3])
def test_sampler_prefills_each_prompt_once_and_samples_the_same(G):
  task = tasks.make_task("addition", num_digits=1)
  cfg = model.ModelConfig(vocab_size=task.vocab_size, max_len=task.prompt_len + 6)
  params = jax.jit(model.init_params, static_argnums=0)(cfg, jax.random.PRNGKey(0))
  prompts_NxP = task.sample_prompts(jax.random.PRNGKey(1), 16)
  kw = dict(max_new_tokens=6, eos_id=task.eos_id, pad_id=task.pad_id, temperature=0.9)
  key = jax.random.PRNGKey(2)
  sample = jax.jit(lambda p, prompts, k, g: sampler.sample(model.GPTPolicy(cfg), p, prompts, k, group_size=g,
                                                                 **kw),
                   static_argnums=3)
  once = sample(params, prompts_NxP, key, G)
  repeated = sample(params, jnp.repeat(prompts_NxP, G, axis=0), key, 1)
  assert once.tokens_BxT.shape == (16 * G, 6)
  np.testing.assert_array_equal(once.tokens_BxT, repeated.tokens_BxT)
  np.testing.assert_array_equal(once.mask_BxT, repeated.mask_BxT)
  np.testing.assert_allclose(once.logp_BxT, repeated.logp_BxT, atol=1e-5)
  if G > 1:  # a group's rows share the prompt but not the draws
    assert not np.array_equal(once.tokens_BxT[0::G], once.tokens_BxT[1::G])


@pytest.mark.parametrize("group_size", [0, 2.0])
def test_sampler_refuses_a_bad_group_size(group_size):
  cfg = model.ModelConfig(vocab_size=9, max_len=6)
  with pytest.raises(ValueError, match="group_size must be a positive int"):
    sampler.sample(model.GPTPolicy(cfg), None, jnp.zeros((2, 2), jnp.int32), jax.random.PRNGKey(0),
                   max_new_tokens=3, eos_id=0, pad_id=1, group_size=group_size)


def tiny(**overrides):
  return tiny_config(updates_per_chunk=2, num_chunks=1, **overrides)


@pytest.mark.parametrize("overrides", [
    pytest.param({}, marks=pytest.mark.slow),  # default suite under 9 min; CI runs it
    pytest.param({"advantage": "gae", "model": {"value_head": "separate"}, "policy_loss": "ppo"},
                 marks=pytest.mark.slow),
    pytest.param({"kl_placement": "loss", "kl_estimator": "k2", "logprob_chunk_size": 3},
                 marks=pytest.mark.slow),
], ids=["rloo", "gae-separate-critic", "kl-in-loss-chunked-head"])
def test_training_with_shared_prompts_matches_the_full_forward(overrides):
  def run(share):
    config = tiny(share_prompts=share, **overrides)
    assert train.shares_prompts(config) == share
    init, chunk = train.make_programs(config, *train.build(config))
    _, m = chunk(init(train.seed_keys(config), train.hparams_from_config(config)))
    return jax.device_get(m)
  shared, full = run(True), run(False)
  for k in full:
    np.testing.assert_allclose(shared[k], full[k], rtol=2e-4, atol=2e-5, err_msg=k)


@pytest.mark.parametrize("overrides,expected", [
    ({}, True),
    ({"share_prompts": False}, False),
    ({"group_size": 1, "advantage": "none"}, False),
    ({"num_minibatches": 2}, False),          # PPO minibatches shuffle rows across groups
    ({"grad_accum_steps": 4}, True),          # micro-batches of 8 rows: 2 whole groups each
    ({"grad_accum_steps": 16}, False),        # micro-batches of 2 rows cut groups
])
def test_when_prompts_are_shared(overrides, expected):
  config = tiny(**overrides)
  _, policy = train.build(config)
  assert train.shares_prompts(config, policy) is expected


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_flop_count_of_the_grouped_forward_matches_xla():
  N, G, P, T = 8, 4, 16, 16
  cfg = model.ModelConfig(vocab_size=64, max_len=P + T, num_layers=2, d_model=128, num_heads=4,
                          value_head="none")
  params = model.init_params(cfg, jax.random.PRNGKey(0))
  prompts = jnp.zeros((N, P), jnp.int32)
  responses = jnp.zeros((N * G, T), jnp.int32)
  net = model.PolicyValue(cfg)

  def logits(p):
    h, _ = net.apply(p, prompts, responses,
                     method=model.PolicyValue.grouped_response_hidden_and_values)
    return net.apply(p, h, method=model.PolicyValue.head)
  compiled = jax.jit(logits).lower(params).compile()
  trunk = lambda a: model.GPTPolicy(cfg).token_flops(a).trunk
  ours = N * P * trunk(P) + N * G * (T - 1) * trunk(P + T - 1) + N * G * T * 2 * 128 * 64
  # XLA also counts elementwise work (layer norms, softmax, GELU) that MFU leaves out.
  assert 0.85 < ours / compiled.cost_analysis()["flops"] <= 1.0


def attention_inputs(N=2, G=3, P=4, L=11, H=2, Dh=8):
  ks = jax.random.split(jax.random.PRNGKey(0), 5)
  rows = [jax.random.normal(k, (N * G, L, H, Dh)) for k in ks[:3]]
  prompt = [jax.random.normal(k, (N, P, H, Dh)) for k in ks[3:]]
  return (*rows, *prompt)


_attend = jax.jit(attention.attend_after_prefix, static_argnames="block")
_attend_grads = jax.jit(jax.grad(lambda a, block: jnp.sum(jnp.sin(attention.attend_after_prefix(
    *a, block=block)))), static_argnums=1)


@pytest.mark.parametrize("block", [pytest.param(1, marks=pytest.mark.slow), 3, 4, 10])
def test_blocked_attention_equals_one_block(block):
  args = attention_inputs()
  whole = _attend(*args, block=64)
  np.testing.assert_allclose(_attend(*args, block=block), whole, atol=1e-6)
  for g_blocked, g_whole in zip(_attend_grads(args, block), _attend_grads(args, 64)):
    np.testing.assert_allclose(g_blocked, g_whole, atol=2e-6)


def test_long_responses_attend_in_blocks_and_match_the_full_forward(monkeypatch):
  monkeypatch.setattr(attention, "ATTENTION_BLOCK", 2)  # 5 response positions: blocks 2, 2, 1
  cfg, params, prompts, responses = net_and_batch("shared", 2, 2, 3, 6)
  h, v = full_forward(cfg, params, prompts, responses)
  h2, v2 = jax.jit(lambda p: grouped_forward(cfg, p, prompts, responses))(params)  # traced now
  np.testing.assert_allclose(h2, h, atol=3e-6)
  np.testing.assert_allclose(v2, v, atol=3e-6)
