"""The "llama" policy: parity with transformers' own fixtures (tests/fixtures/hf, made by
tests/fixtures/make_hf_fixtures.py), prompts of any length, and the capabilities every policy
has (prompt sharing, the blocked cache, the chunked LM head, bfloat16, value heads)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pg.policy import build_policy, sampler
from pg.policy.llama import LlamaPolicy

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "hf")
FAMILIES = ["llama", "llama3_tied", "qwen2", "qwen3", "mistral"]


def pretrained(name, max_len=24, **options):
  policy = build_policy({"name": "llama", "init_from": os.path.join(FIXTURES, name), **options},
                        vocab_size=200, max_len=max_len)
  return policy, policy.warm_start(policy.init(jax.random.PRNGKey(0)), policy.pretrained_params())


def tiny(max_len=40, **options):
  options = {"name": "llama", "num_layers": 2, "d_model": 32, "num_heads": 4, "num_kv_heads": 2,
             "mlp_dim": 48, **options}
  policy = build_policy(options, vocab_size=23, max_len=max_len)
  return policy, policy.init(jax.random.PRNGKey(1))


@pytest.mark.parametrize("name", FAMILIES)
def test_logits_and_greedy_tokens_match_transformers(name):
  """float32 logits within 1e-4 of transformers' (one row; a left-padded batch at its real
  positions) and the same greedy continuations, through the blocked-cache sampler."""
  policy, params = pretrained(name)
  e = np.load(os.path.join(FIXTURES, name, "expected.npz"))
  logits, _ = policy.sequence_outputs(params, jnp.asarray(e["ids_single"]))
  np.testing.assert_allclose(logits, e["logits_single"], atol=1e-4, rtol=0)
  mask = jnp.asarray(e["mask_batch"], jnp.float32)
  logits, _ = policy.sequence_outputs(params, jnp.asarray(e["ids_batch"]), mask)
  real = e["mask_batch"] > 0
  np.testing.assert_allclose(np.asarray(logits)[real], e["logits_batch"][real], atol=1e-4, rtol=0)
  greedy = lambda ids, m=None: sampler.sample(
      policy, params, jnp.asarray(ids), jax.random.PRNGKey(0), max_new_tokens=8, eos_id=-1,
      pad_id=0, greedy=True, prompt_mask_NxP=m).tokens_BxT
  np.testing.assert_array_equal(greedy(e["ids_single"]), e["greedy_single"])
  np.testing.assert_array_equal(greedy(e["ids_batch"], mask), e["greedy_batch"])


def left_padded(rows, length, pad=0):
  ids = np.full((len(rows), length), pad, np.int32)
  mask = np.zeros((len(rows), length), np.float32)
  for i, row in enumerate(rows):
    ids[i, length - len(row):], mask[i, length - len(row):] = row, 1
  return jnp.asarray(ids), jnp.asarray(mask)


ROWS = [[3, 4, 5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15], [16]]


def test_each_row_of_a_mixed_batch_gets_what_it_gets_alone():
  """Logits, samples (same per-prompt key) and the trainer's log-probs of every row of a batch
  of mixed prompt lengths equal that row's alone, grouped and ungrouped."""
  policy, params = tiny()
  ids, mask = left_padded(ROWS, 7)
  keys = jax.random.split(jax.random.PRNGKey(5), len(ROWS))
  logits, _ = policy.sequence_outputs(params, ids, mask)
  batch = sampler.sample(policy, params, ids, keys, max_new_tokens=6, eos_id=1, pad_id=0,
                         group_size=3, prompt_mask_NxP=mask)
  stats = policy.response_stats(params, ids, batch.tokens_BxT, 1.0, mask)
  full = policy.response_stats(params, jnp.repeat(ids, 3, axis=0), batch.tokens_BxT, 1.0,
                               jnp.repeat(mask, 3, axis=0))
  for i, row in enumerate(ROWS):
    if i in (0, 2):  # each length alone compiles its own programs: two rows suffice
      continue
    alone = jnp.asarray([row], jnp.int32)
    own, _ = policy.sequence_outputs(params, alone)
    np.testing.assert_allclose(logits[i, 7 - len(row):], own[0], atol=2e-5)
    s = sampler.sample(policy, params, alone, keys[i:i + 1], max_new_tokens=6, eos_id=1,
                       pad_id=0, group_size=3)
    rows = slice(3 * i, 3 * i + 3)
    np.testing.assert_array_equal(batch.tokens_BxT[rows], s.tokens_BxT)
    np.testing.assert_allclose(batch.logp_BxT[rows], s.logp_BxT, atol=2e-5)
    logp, entropy, _ = policy.response_stats(params, alone, s.tokens_BxT, 1.0)
    for got in (stats, full):
      np.testing.assert_allclose(got[0][rows], logp, atol=2e-5)
      np.testing.assert_allclose(got[1][rows], entropy, atol=2e-5)


@pytest.mark.slow
def test_behaviour_log_probs_are_the_trainers_across_cache_blocks():
  """ρ = 1 on-policy: the sampler's log-probs (the cache in blocks, T > DECODE_BLOCK) are the
  trainer's, with left-padded prompts, shared prompts and the chunked LM head."""
  T = sampler.DECODE_BLOCK + 5
  policy, params = tiny(max_len=7 + T)
  ids, mask = left_padded(ROWS[:2], 7)
  s = sampler.sample(policy, params, ids, jax.random.PRNGKey(2), max_new_tokens=T, eos_id=-1,
                     pad_id=0, group_size=2, prompt_mask_NxP=mask)
  logp, _, _ = policy.response_stats(params, ids, s.tokens_BxT, 1.0, mask)
  np.testing.assert_allclose(logp, s.logp_BxT, atol=5e-5)
  chunked = LlamaPolicy(policy.cfg, logprob_chunk_size=7)
  np.testing.assert_allclose(chunked.response_stats(params, ids, s.tokens_BxT, 1.0, mask)[0],
                             logp, atol=5e-5)


@pytest.mark.parametrize("tie", [True, False])
def test_chunked_head_equals_dense_head(tie):
  policy, params = tiny(tie_embeddings=tie)
  ids, mask = left_padded(ROWS, 7)
  tokens = jax.random.randint(jax.random.PRNGKey(3), (4, 5), 0, 23)
  dense = policy.response_stats(params, ids, tokens, 0.7, mask)
  chunked = LlamaPolicy(policy.cfg, logprob_chunk_size=5).response_stats(params, ids, tokens,
                                                                         0.7, mask)
  for a, b in zip(dense[:2], chunked[:2]):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_bfloat16_compute_keeps_float32_weights_and_tracks_float32():
  policy32, params = tiny()
  policy16, _ = tiny(dtype="bfloat16")
  assert {x.dtype for x in jax.tree_util.tree_leaves(policy16.init(jax.random.PRNGKey(1)))} == {
      jnp.dtype(jnp.float32)}
  ids = jnp.asarray([ROWS[0]], jnp.int32)
  a, _ = policy32.sequence_outputs(params, ids)
  b, _ = policy16.sequence_outputs(params, ids)
  assert b.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(b, np.float32), a, atol=0.05)
  s = sampler.sample(policy16, params, ids, jax.random.PRNGKey(0), max_new_tokens=4, eos_id=-1,
                     pad_id=0)
  assert s.tokens_BxT.shape == (1, 4) and np.isfinite(np.asarray(s.logp_BxT)).all()


@pytest.mark.parametrize("head", ["shared", "separate"])
def test_value_heads_and_warm_start_from_a_checkpoint(head):
  """A value head on the pretrained trunk (shared) or on a critic trunk that starts as a copy of
  it (separate); the policy's logits stay the checkpoint's."""
  policy, params = pretrained("llama", value_head=head)
  plain, plain_params = pretrained("llama")
  ids = jnp.asarray([[3, 4, 5, 6]], jnp.int32)
  logits, values = policy.sequence_outputs(params, ids)
  np.testing.assert_array_equal(logits, plain.sequence_outputs(plain_params, ids)[0])
  assert values.shape == (1, 4) and values.dtype == jnp.float32
  if head == "separate":
    p = params["params"]
    for a, b in zip(jax.tree_util.tree_leaves(p["trunk"]),
                    jax.tree_util.tree_leaves(p["critic_trunk"])):
      np.testing.assert_array_equal(a, b)


def test_token_flops_count_every_matmul():
  """2·(parameters touched) per token at zero attended positions, plus 4·H·Dh per attended
  position and layer."""
  policy, params = tiny(tie_embeddings=False)
  c = policy.cfg
  p = params["params"]
  trunk_matrices = sum(x.size for path, x in jax.tree_util.tree_flatten_with_path(p["trunk"])[0]
                       if "kernel" in jax.tree_util.keystr(path))
  f0, f9 = policy.token_flops(0), policy.token_flops(9)
  assert f0.trunk == 2 * trunk_matrices
  assert f9.trunk - f0.trunk == c.num_layers * 4 * c.num_heads * c.dim_per_head * 9
  assert f0.head == 2 * p["lm_head"]["kernel"].size


def test_gpt_refuses_a_prompt_mask():
  policy = build_policy({"name": "gpt"}, vocab_size=8, max_len=8)
  params = policy.init(jax.random.PRNGKey(0))
  ids, mask = left_padded([[1, 2], [3]], 2)
  with pytest.raises(ValueError, match="takes prompts of one length"):
    sampler.sample(policy, params, ids, jax.random.PRNGKey(0), max_new_tokens=2, eos_id=-1,
                   pad_id=0, prompt_mask_NxP=mask)
  with pytest.raises(ValueError, match="takes prompts of one length"):
    policy.response_stats(params, ids, ids, 1.0, mask)


@pytest.mark.parametrize("tie", [True, False])
def test_the_samplers_decode_params_give_the_same_logits(tie):
  """`decode_params` lays a tied head out as [D, V] once for the decode loop; decoding with it
  gives the logits decoding gives without it."""
  policy, params = tiny(tie_embeddings=tie)
  prompts = jax.random.randint(jax.random.PRNGKey(1), (3, 7), 0, policy.vocab_size)
  ready = policy.decode_params(params)
  assert ("decode" in ready) == tie
  want, _ = policy.decode(params, prompts, 0, policy.init_cache(3))
  got, _ = policy.decode(ready, prompts, 0, policy.init_cache(3))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  full, _ = policy.sequence_outputs(params, prompts)
  np.testing.assert_allclose(got, full, rtol=1e-4, atol=1e-4)
