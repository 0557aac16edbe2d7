"""The Policy interface, as the GPT policy implements it: response log-probs, entropies and
values with and without prompt sharing and with the chunked head; warm starts; FLOPs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pg
from pg.policy import Policy, abstract_params, build_policy


def policy_and_batch(value_head="shared", chunk=None, N=3, G=2, P=4, T=5, V=11):
  policy = build_policy({"name": "gpt", "num_layers": 1, "d_model": 16, "num_heads": 2,
                         "value_head": value_head}, vocab_size=V, max_len=P + T,
                        logprob_chunk_size=chunk)
  params = policy.init(jax.random.PRNGKey(0))
  k1, k2 = jax.random.split(jax.random.PRNGKey(1))
  prompts_NxP = jax.random.randint(k1, (N, P), 0, V)
  tokens_BxT = jax.random.randint(k2, (N * G, T), 0, V)
  return policy, params, prompts_NxP, tokens_BxT


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_the_gpt_policy_implements_the_interface():
  policy, params, _, _ = policy_and_batch()
  assert isinstance(policy, Policy) and policy.has_values and policy.shares_prompts
  shapes = jax.tree_util.tree_map(lambda x: x.shape, abstract_params(policy))
  assert shapes == jax.tree_util.tree_map(lambda x: x.shape, params)


@pytest.mark.parametrize("value_head", [pytest.param("none", marks=pytest.mark.slow), "shared",
                                        pytest.param("separate", marks=pytest.mark.slow)])
def test_response_stats_match_the_full_forward(value_head):
  """Log π of each response token = log-softmax of the full forward's logits at the position
  before it; values there too; N < B (a group's prompt run once) gives the same numbers."""
  policy, params, prompts_NxP, tokens_BxT = policy_and_batch(value_head)
  G = tokens_BxT.shape[0] // prompts_NxP.shape[0]
  prompts_BxP = jnp.repeat(prompts_NxP, G, axis=0)
  P = prompts_BxP.shape[1]
  logits_BxLxV, values_BxL = policy.sequence_outputs(
      params, jnp.concatenate([prompts_BxP, tokens_BxT], axis=1))
  logp_BxT = pg.token_log_probs(logits_BxLxV[:, P - 1:-1], tokens_BxT, temperature=0.7)
  full = policy.response_stats(params, prompts_BxP, tokens_BxT, 0.7)
  grouped = policy.response_stats(params, prompts_NxP, tokens_BxT, 0.7)
  for got in (full, grouped):
    np.testing.assert_allclose(got[0], logp_BxT, atol=1e-5)
    if value_head == "none":
      assert got[2] is None
    else:
      np.testing.assert_allclose(got[2], values_BxL[:, P - 1:-1], atol=1e-5)


def test_the_chunked_head_is_a_capability_of_the_policy():
  dense, params, prompts, tokens = policy_and_batch(chunk=None)
  chunked, _, _, _ = policy_and_batch(chunk=4)
  a, b = dense.response_stats(params, prompts, tokens, 1.0), chunked.response_stats(
      params, prompts, tokens, 1.0)
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, atol=1e-5)


def test_warm_start_copies_the_trunk_and_keeps_a_fresh_value_head():
  source, source_params, _, _ = policy_and_batch("none")
  target, fresh, _, _ = policy_and_batch("shared")
  started = target.warm_start(fresh, source_params)
  same = jax.tree_util.tree_map(np.array_equal, started["params"]["trunk"],
                                source_params["params"]["trunk"])
  assert all(jax.tree_util.tree_leaves(same))
  np.testing.assert_array_equal(started["params"]["value_out"]["kernel"],
                                fresh["params"]["value_out"]["kernel"])


def test_token_flops_count_the_trunk_head_and_a_separate_critic():
  shared, _, _, _ = policy_and_batch("shared")
  separate, _, _, _ = policy_and_batch("separate")
  d, L, V, a = 16, 1, 11, 7
  trunk = 2 * L * 12 * d * d + L * 4 * d * a
  assert shared.token_flops(a) == (trunk, 2 * d * V, 0)
  assert separate.token_flops(a) == (trunk, 2 * d * V, trunk)
