"""The sampler on the policy interface: the KV cache against the full forward, cache blocks, end
tokens and padding, behaviour log-probs (ρ = 1 on-policy)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pg
from pg.policy import gpt as model
from pg.policy import sampler
from pg import tasks
from pg.policy import build_policy
from pg.train.build import never_emitted

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_kv_cache_decoding_equals_full_forward():
  cfg = model.ModelConfig(vocab_size=9, max_len=10, value_head="shared")
  params = jax.jit(model.init_params, static_argnums=0)(cfg, jax.random.PRNGKey(0))
  net = model.PolicyValue(cfg)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 10), 0, 9)
  full, _ = jax.jit(net.apply)(params, tokens)
  decode = jax.jit(lambda p, x, t, c: net.apply(p, x, t, c, method=model.PolicyValue.decode))
  logits, cache = decode(params, tokens[:, :4], 0, model.init_cache(cfg, 3))
  steps = [logits]
  for t in range(4, 10):
    logits, cache = decode(params, tokens[:, t:t + 1], t, cache)
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5)


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_decoding_reads_no_cache_block_after_its_own():
  cfg = model.ModelConfig(vocab_size=9, max_len=10)
  params = model.init_params(cfg, jax.random.PRNGKey(0))
  net = model.PolicyValue(cfg)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 7), 0, 9)
  decode = jax.jit(lambda p, x, t, c, j: net.apply(p, x, t, c, j,
                                                   method=model.PolicyValue.decode),
                   static_argnums=4)
  one = model.init_cache(cfg, 3)
  blocks = model.init_cache(cfg, 3, (4, 2, 4))  # positions 0-3, 4-5, 6-9
  _, one = decode(params, tokens[:, :4], 0, one, 0)
  _, blocks = decode(params, tokens[:, :4], 0, blocks, 0)
  for t, j in ((4, 1), (5, 1), (6, 2)):
    # Unwritten blocks after block j hold NaN: a read of them would show in the logits.
    poisoned = [kv[:j + 1] + tuple((k * jnp.nan, v * jnp.nan) for k, v in kv[j + 1:])
                for kv in blocks]
    want, one = decode(params, tokens[:, t:t + 1], t, one, 0)
    got, _ = decode(params, tokens[:, t:t + 1], t, poisoned, j)
    np.testing.assert_allclose(got, want, atol=1e-5)
    _, blocks = decode(params, tokens[:, t:t + 1], t, blocks, j)
  # Each step wrote its keys into its own block (position 6 is block 2's first).
  np.testing.assert_array_equal(blocks[0][2][0][:, :, :1], one[0][0][0][:, :, 6:7])
  with pytest.raises(ValueError, match="must be positive and sum to model.max_len = 10"):
    model.init_cache(cfg, 3, (4, 4))


@pytest.mark.parametrize("block", [pytest.param(1, marks=pytest.mark.slow), 2, 4])
def test_decoding_in_blocks_samples_the_same(monkeypatch, block):
  """The sampler's cache blocks (a scan per DECODE_BLOCK slots, each step reading only the blocks
  up to its own) give the samples of one block over the whole context."""
  task = tasks.make_task("addition", num_digits=1)
  cfg = model.ModelConfig(vocab_size=task.vocab_size, max_len=task.prompt_len + 6)
  params = model.init_params(cfg, jax.random.PRNGKey(0))
  prompts = task.sample_prompts(jax.random.PRNGKey(1), 16)

  def run():
    return jax.jit(lambda p, k: sampler.sample(model.GPTPolicy(cfg), p, prompts, k, max_new_tokens=6,
                                               eos_id=task.eos_id, pad_id=task.pad_id,
                                               group_size=2))(params, jax.random.PRNGKey(2))
  whole = run()
  monkeypatch.setattr(sampler, "DECODE_BLOCK", block)
  parts = run()
  np.testing.assert_array_equal(parts.tokens_BxT, whole.tokens_BxT)
  np.testing.assert_array_equal(parts.mask_BxT, whole.mask_BxT)
  np.testing.assert_array_equal(parts.truncated_B, whole.truncated_B)
  np.testing.assert_allclose(parts.logp_BxT, whole.logp_BxT, atol=1e-6)


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_sampler_end_token_padding_and_behaviour_logprobs():
  task = tasks.make_task("addition", num_digits=1)
  cfg = model.ModelConfig(vocab_size=task.vocab_size, max_len=task.prompt_len + 6)
  params = model.init_params(cfg, jax.random.PRNGKey(0))
  prompts = task.sample_prompts(jax.random.PRNGKey(1), 64)
  s = jax.jit(lambda p, k: sampler.sample(model.GPTPolicy(cfg), p, prompts, k, max_new_tokens=6,
                                          eos_id=task.eos_id, pad_id=task.pad_id,
                                          temperature=0.8))(params, jax.random.PRNGKey(2))
  tokens, mask = np.asarray(s.tokens_BxT), np.asarray(s.mask_BxT)
  for row_tokens, row_mask, truncated in zip(tokens, mask, np.asarray(s.truncated_B)):
    n = int(row_mask.sum())
    assert np.all(row_mask[:n] == 1) and np.all(row_mask[n:] == 0)  # a prefix
    assert np.all(row_tokens[n:] == task.pad_id)
    ends = np.flatnonzero(row_tokens[:n] == task.eos_id)
    assert truncated == (len(ends) == 0)
    if len(ends):
      assert ends[0] == n - 1  # the end token is the last generated one, and kept
  assert 0 < s.truncated_B.mean() < 1 and mask.sum(1).min() < 6  # both cases occurred
  # The trainer's log-probs of the same tokens (full forward, same temperature) match the
  # sampler's: ρ = 1 on-policy.
  logits, _ = model.PolicyValue(cfg).apply(params, jnp.concatenate([prompts, s.tokens_BxT], 1))
  logp = pg.token_log_probs(logits[:, task.prompt_len - 1:-1], s.tokens_BxT, temperature=0.8)
  np.testing.assert_allclose(logp * mask, s.logp_BxT, atol=1e-5)


def test_sampler_refuses_prompts_longer_than_the_context():
  cfg = model.ModelConfig(vocab_size=9, max_len=6)
  params = model.init_params(cfg, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="max_len"):
    sampler.sample(model.GPTPolicy(cfg), params, jnp.zeros((2, 4), jnp.int32), jax.random.PRNGKey(0),
                   max_new_tokens=3, eos_id=0, pad_id=1)


@pytest.mark.parametrize("masked", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_the_pad_token_is_never_sampled_and_rho_stays_one(masked):
  """A policy that favours the pad token (+8 on its logit) never emits it when the task pads
  with it (`pg.train.build` masks it): the sampler and the trainer's log-probs use the same
  masked distribution, so ρ = 1 on-policy. Unmasked, pad shows up inside responses."""
  task = tasks.make_task("addition", num_digits=1)
  policy = build_policy({"name": "gpt", "num_layers": 1, "d_model": 16, "num_heads": 2},
                        vocab_size=task.vocab_size, max_len=task.prompt_len + 6,
                        masked_ids=never_emitted(task) if masked else ())
  params = policy.init(jax.random.PRNGKey(0))
  bias = params["params"]["lm_head"]["bias"]
  params["params"]["lm_head"]["bias"] = bias.at[task.pad_id].add(8.0)
  prompts = task.sample_prompts(jax.random.PRNGKey(1), 64)
  s = jax.jit(lambda p, k: sampler.sample(policy, p, prompts, k, max_new_tokens=6,
                                          eos_id=task.eos_id, pad_id=task.pad_id,
                                          temperature=0.9))(params, jax.random.PRNGKey(2))
  live_pads = int(np.sum((np.asarray(s.tokens_BxT) == task.pad_id) & (np.asarray(s.mask_BxT) > 0)))
  if not masked:
    assert live_pads > 0  # the test can see the bug
    return
  assert policy.masked_ids == (task.pad_id,) and live_pads == 0
  logp, _, _ = policy.response_stats(params, prompts, s.tokens_BxT, 0.9)
  np.testing.assert_allclose(logp * s.mask_BxT, s.logp_BxT, atol=1e-5)


class CountingPolicy:
  """A policy whose every decode call (prefill or step) ticks a host counter as it runs."""

  def __init__(self, policy):
    self.policy, self.calls = policy, 0

  def tick(self):
    self.calls += 1

  def decode(self, *args, **kwargs):
    jax.debug.callback(self.tick)
    return self.policy.decode(*args, **kwargs)

  def __getattr__(self, name):
    return getattr(self.policy, name)


def small_llama(vocab=12, max_len=96):
  import ml_collections
  return build_policy(ml_collections.ConfigDict(
      {"name": "llama", "num_layers": 1, "d_model": 16, "num_heads": 2, "num_kv_heads": 1,
       "mlp_dim": 32}), vocab_size=vocab, max_len=max_len)


@pytest.mark.parametrize("block", [None, pytest.param(16, marks=pytest.mark.slow)])
def test_decoding_stops_once_every_row_has_ended_with_the_same_samples(monkeypatch, block):
  if block:
    monkeypatch.setattr(sampler, "DECODE_BLOCK", block)  # several cache blocks, each a loop
  policy = small_llama()
  params = policy.init(jax.random.PRNGKey(0))
  prompts = jax.random.randint(jax.random.PRNGKey(1), (4, 6), 1, 12)
  kw = dict(max_new_tokens=80, eos_id=3, pad_id=0, temperature=1.0, group_size=3)
  runs = {}
  for early in (True, False):
    counting = CountingPolicy(policy)
    s = jax.jit(lambda p, k, c=counting, e=early: sampler.sample(c, p, prompts, k, stop_early=e,
                                                                  **kw))(
        params, jax.random.PRNGKey(2))
    jax.block_until_ready(s)
    jax.effects_barrier()
    runs[early] = s, counting.calls
  (s, calls), (full, full_calls) = runs[True], runs[False]
  for a, b in zip(s, full):
    np.testing.assert_array_equal(a, b)
  lengths = np.asarray(s.mask_BxT).sum(1)
  assert not np.any(np.asarray(s.truncated_B))  # every row ended ...
  assert lengths.max() < 40  # ... well before max_new_tokens
  assert full_calls == 1 + 80  # the prefill and every step
  assert calls == 1 + lengths.max()  # the prefill and the steps until the last row ended


def test_stopping_early_under_vmap_and_without_an_end_token_changes_no_sample():
  policy = small_llama()
  params = policy.init(jax.random.PRNGKey(0))
  prompts_RxNxP = jax.random.randint(jax.random.PRNGKey(1), (3, 2, 5), 1, 12)
  keys = jax.random.split(jax.random.PRNGKey(4), 3)
  for eos in (3, -1):
    def run(early, eos=eos):
      f = lambda p, k: sampler.sample(policy, params, p, k, max_new_tokens=30, eos_id=eos,
                                      pad_id=0, group_size=2, stop_early=early)
      return jax.jit(jax.vmap(f))(prompts_RxNxP, keys)
    for a, b in zip(run(True), run(False)):
      np.testing.assert_array_equal(a, b)
