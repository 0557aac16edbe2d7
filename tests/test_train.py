"""The model, the sampler and the compiled train step, end to end on tiny configs."""

import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pg
from pg import configs, experiment, model, sampler, tasks, train
from tiny_config import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_chunks(config, n, hp=None):
  init, chunk = train.make_programs(config)
  state = init(train.seed_keys(config), hp or train.hparams_from_config(config))
  out = []
  for _ in range(n):
    state, m = chunk(state)
    out.append(jax.device_get(m))
  return state, {k: np.concatenate([o[k] for o in out], axis=1) for k in out[0]}, chunk


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


@pytest.mark.parametrize("block", [1, 2, 4])
def test_decoding_in_blocks_samples_the_same(monkeypatch, block):
  """The sampler's cache blocks (a scan per DECODE_BLOCK slots, each step reading only the blocks
  up to its own) give the samples of one block over the whole context."""
  task = tasks.make_task("addition", num_digits=1)
  cfg = model.ModelConfig(vocab_size=task.vocab_size, max_len=task.prompt_len + 6)
  params = model.init_params(cfg, jax.random.PRNGKey(0))
  prompts = task.sample_prompts(jax.random.PRNGKey(1), 16)

  def run():
    return jax.jit(lambda p, k: sampler.sample(p, cfg, prompts, k, max_new_tokens=6,
                                               eos_id=task.eos_id, pad_id=task.pad_id,
                                               group_size=2))(params, jax.random.PRNGKey(2))
  whole = run()
  monkeypatch.setattr(sampler, "DECODE_BLOCK", block)
  parts = run()
  np.testing.assert_array_equal(parts.tokens_BxT, whole.tokens_BxT)
  np.testing.assert_array_equal(parts.mask_BxT, whole.mask_BxT)
  np.testing.assert_array_equal(parts.truncated_B, whole.truncated_B)
  np.testing.assert_allclose(parts.logp_BxT, whole.logp_BxT, atol=1e-6)


def test_sampler_end_token_padding_and_behaviour_logprobs():
  task = tasks.make_task("addition", num_digits=1)
  cfg = model.ModelConfig(vocab_size=task.vocab_size, max_len=task.prompt_len + 6)
  params = model.init_params(cfg, jax.random.PRNGKey(0))
  prompts = task.sample_prompts(jax.random.PRNGKey(1), 64)
  s = jax.jit(lambda p, k: sampler.sample(p, cfg, prompts, k, max_new_tokens=6,
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
  logp = pg.token_log_probs(sampler.response_logits(logits, task.prompt_len), s.tokens_BxT,
                            temperature=0.8)
  np.testing.assert_allclose(logp * mask, s.logp_BxT, atol=1e-5)


def test_sampler_refuses_prompts_longer_than_the_context():
  cfg = model.ModelConfig(vocab_size=9, max_len=6)
  params = model.init_params(cfg, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="max_len"):
    sampler.sample(params, cfg, jnp.zeros((2, 4), jnp.int32), jax.random.PRNGKey(0),
                   max_new_tokens=3, eos_id=0, pad_id=1)


def test_tasks_score_what_they_say():
  add = tasks.make_task("addition", num_digits=2)
  prompt = jnp.array([[1, 2, 10, 3, 9, 11]])  # 12 + 39 = 051, written reversed: 1 5 0
  assert float(add.score(prompt, jnp.array([[1, 5, 0, 12]]), jnp.ones((1, 4)))[0]) == 1.0
  assert float(add.score(prompt, jnp.array([[1, 5, 1, 12]]), jnp.ones((1, 4)))[0]) == 0.75
  strict = tasks.make_task("addition", num_digits=2, partial_credit=False)
  assert float(strict.score(prompt, jnp.array([[1, 5, 1, 12]]), jnp.ones((1, 4)))[0]) == 0.0
  needle = tasks.make_task("needle", length=4, num_symbols=3)
  p = jnp.array([[3 + 2, 1]])  # put symbol 1 at position 2
  assert float(needle.score(p, jnp.array([[0, 0, 1, 0]]), jnp.ones((1, 4)))[0]) == 1.0
  assert float(needle.score(p, jnp.array([[1, 0, 1, 0]]), jnp.ones((1, 4)))[0]) == \
      pytest.approx(1 - 1 / 3)  # exclusive: symbol 1 elsewhere costs
  assert float(needle.score(p, jnp.array([[0, 0, 1, 0]]), jnp.array([[1., 1., 0., 0.]]))[0]) == 0


def test_python_reward_works_under_jit_and_vmap():
  task = tasks.make_task("count_up")
  prompts = jnp.array([[[3]], [[9]]])
  responses = jnp.array([[[4, 5, 6, 7, 8, 9, 0, 1]], [[0, 1, 2, 10, 11, 11, 11, 11]]])
  mask = jnp.array([[[1.0] * 8], [[1.0] * 4 + [0.0] * 4]])
  scores = jax.jit(jax.vmap(task.score))(prompts, responses, mask)
  np.testing.assert_allclose(scores, [[1.0], [3 / 8]])


def test_python_reward_errors_are_clear():
  bad = tasks.python_task("bad", lambda p, r: float("nan"), vocab_size=4, prompt_len=1,
                          max_new_tokens=2, eos_id=2, pad_id=3,
                          sample_prompts=lambda k, n: jnp.zeros((n, 1), jnp.int32))
  with pytest.raises(Exception, match="finite float"):
    jax.block_until_ready(jax.jit(bad.score)(jnp.zeros((1, 1), jnp.int32),
                                             jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2))))


def test_short_run_learns():
  config = tiny()
  _, m, _ = run_chunks(config, 8)  # 40 updates
  score = m["mean_score"]
  # Untrained: P(y_k = c) = 1/2 over the 2 symbols at best (~0.3 with the other tokens);
  # after 40 updates every seed must have gained at least 0.3.
  assert np.all(score[:, -5:].mean(1) > score[:, :5].mean(1) + 0.3), score[:, [0, -1]]


def test_seeds_differ_and_reruns_are_identical():
  config = tiny()
  _, m1, _ = run_chunks(config, 1)
  _, m2, _ = run_chunks(config, 1)
  for k in m1:
    np.testing.assert_array_equal(m1[k], m2[k], err_msg=k)  # same seeds: bit-identical
  assert not np.array_equal(m1["mean_score"][0], m1["mean_score"][1])  # seeds differ
  expected = {"mean_score", "advantage_mean", "advantage_std", "loss", "pg_loss",
              "entropy", "kl_to_ref", "clip_fraction", "grad_norm", "response_length",
              "truncated_fraction", "approx_kl_old", "ratio_mean"}
  assert expected <= set(m1)


def test_second_chunk_and_new_hyperparameters_do_not_recompile():
  config = tiny()
  init, chunk = train.make_programs(config)
  keys = train.seed_keys(config)
  state = init(keys, train.hparams_from_config(config))
  state, a = chunk(state)
  state, _ = chunk(state)
  other = init(keys, pg.make_hparams(**{**config.hparams, "learning_rate": 1e-4,
                                        "temperature": 0.7, "entropy_coef": 0.1}))
  _, b = chunk(other)
  assert chunk._cache_size() == 1
  assert not np.allclose(a["loss"], b["loss"])  # the new values did take effect


def test_on_policy_ratio_is_one():
  _, m, _ = run_chunks(tiny(policy_loss="ppo"), 1)
  np.testing.assert_allclose(m["ratio_mean"], 1.0, atol=1e-5)
  np.testing.assert_allclose(m["clip_fraction"], 0.0)


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_resume_continues_exactly(tmp_path):
  full = tiny(num_chunks=4, checkpoint_every=2)
  state_a = experiment.run(full, str(tmp_path / "a"), verbose=False)
  half = tiny(num_chunks=2, checkpoint_every=2)
  experiment.run(half, str(tmp_path / "b"), verbose=False)
  state_b = experiment.run(full, str(tmp_path / "b"), verbose=False)  # resumes at chunk 2
  rows_a, rows_b = read_jsonl(tmp_path / "a" / "metrics.jsonl"), read_jsonl(
      tmp_path / "b" / "metrics.jsonl")
  assert len(rows_a) == 2 * 4 * 5 and rows_a == rows_b
  jax.tree_util.tree_map(np.testing.assert_array_equal, state_a.params, state_b.params)
  assert (tmp_path / "b" / "curves.png").exists() is False  # verbose=False: no report
  assert os.listdir(tmp_path / "a" / "tb")


def test_workdir_with_another_config_is_refused(tmp_path):
  experiment.run(tiny(num_chunks=1), str(tmp_path), verbose=False)
  with pytest.raises(ValueError, match="different config"):
    experiment.run(tiny(num_chunks=1, group_size=2), str(tmp_path), verbose=False)


@pytest.mark.parametrize("override,match", [
    ({"advantage": "nope"}, "known: "),
    ({"policy_loss": "nope"}, "known: "),
    ({"aggregation": "mean"}, "config.aggregation"),
    ({"group_size": 1}, "config.group_size"),
    ({"advantage": "gae"}, "value_head"),
    ({"num_minibatches": 3}, "config.num_minibatches"),
    ({"kl_placement": "both"}, "config.kl_placement"),
    ({"num_seeds": 0}, "config.num_seeds"),
    ({"hparams": {"lam": 1.5}}, "`lam`"),
    ({"hparams": {"learning_rate": 0.0}}, "`learning_rate`"),
    ({"model": {"d_model": 31}}, "model.d_model"),
    ({"model": {"value_head": "big"}}, "model.value_head"),
    ({"task": {"name": "chess"}}, "unknown task"),
    ({"logprob_chunk_size": 0}, "logprob_chunk_size"),
])
def test_bad_config_fails_before_compiling(override, match):
  with pytest.raises((KeyError, ValueError), match=match):
    train.make_train(tiny(**override))


@pytest.mark.parametrize("path", sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                                        if "enumerable" not in p), ids=os.path.basename)
def test_every_config_runs_one_shrunk_chunk(path):
  config = configs.load_config_file(path)
  text = open(path).read()
  assert any(f"python experiments/{script}.py" in text  # opens with its command
             for script in ("train", "sweep", "rlhf"))
  with config.unlocked():
    config.num_seeds, config.updates_per_chunk = 2, 2
    config.num_prompts = max(2, config.num_minibatches)
    config.model.update(num_layers=1, d_model=32, num_heads=2)
  _, m, _ = run_chunks(config, 1)
  for k, v in m.items():
    assert np.all(np.isfinite(v)), k


@pytest.mark.parametrize("repeat", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_sigterm_finishes_the_chunk_and_saves(tmp_path, repeat):
  import signal
  import subprocess
  import sys
  import time
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "train.py"),
         f"--workdir={tmp_path}", "--config.num_seeds=1", "--config.num_chunks=1000",
         "--config.checkpoint_every=1000", "--config.model.num_layers=1"]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  metrics = tmp_path / "metrics.jsonl"
  deadline = time.time() + 120
  while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 0):
    time.sleep(0.2)
  time.sleep(0.3 * repeat)  # land the signal at different points of the loop
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 130, out[-2000:]
  assert "saved the state after chunk" in out
  saved = int(out.split("saved the state after chunk ")[1].split(";")[0])
  rows = read_jsonl(metrics)
  assert saved >= 1 and len(rows) == saved * 10  # logged exactly the chunks that were saved
  assert os.listdir(tmp_path / "checkpoints") == [str(saved)]


@pytest.mark.parametrize("d_model,num_layers,vocab,seq", [(64, 2, 16, 10), (128, 2, 64, 32)])
def test_flop_count_matches_xla_for_a_forward_pass(d_model, num_layers, vocab, seq):
  from pg import flops
  cfg = model.ModelConfig(vocab_size=vocab, max_len=seq, num_layers=num_layers,
                          d_model=d_model, num_heads=4, value_head="none")
  params = model.init_params(cfg, jax.random.PRNGKey(0))
  tokens = jnp.zeros((8, seq), jnp.int32)
  compiled = jax.jit(lambda p, t: model.PolicyValue(cfg).apply(p, t)[0]).lower(
      params, tokens).compile()
  ours = 8 * seq * flops.forward_flops_per_token(d_model, num_layers, vocab, seq)
  # XLA also counts elementwise work (layer norms, softmax, GELU) that MFU leaves out.
  assert 0.9 < ours / compiled.cost_analysis()["flops"] <= 1.0


def test_flop_count_of_decode_steps_matches_xla_for_each_cache_block(monkeypatch):
  """pg.flops charges a decode step at slot t for the cache blocks up to its own: check that
  against XLA's count of one compiled step per slot, with blocks of 2 slots."""
  from pg import flops
  monkeypatch.setattr(sampler, "DECODE_BLOCK", 2)
  B, P, T = 8, 4, 6
  cfg = model.ModelConfig(vocab_size=64, max_len=P + T, num_layers=2, d_model=128, num_heads=4,
                          value_head="none")
  params = model.init_params(cfg, jax.random.PRNGKey(0))
  cache = model.init_cache(cfg, B, (P + 2, 2, 2))
  net = model.PolicyValue(cfg)
  trunk = lambda a: flops.forward_flops_per_token(128, 2, 64, a)
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
  task = tasks.make_task(config.task.name, **config.task.options)
  total = flops.update_flops(config, task)
  monkeypatch.setattr(sampler, "DECODE_BLOCK", 10**6)  # one block: every step reads all of it
  one_block = flops.update_flops(config, task)
  trunk_only = lambda a: flops.forward_flops_per_token(128, 2, 64, a, with_head=False)
  prefill = 2 * P * (trunk_only(P + T + P) - trunk_only(P + 2 + P))  # block 0 and the prompt
  assert one_block - total == pytest.approx(
      prefill + sum(B * trunk(P + T + 1) - c for c in charged))


def test_target_token_task_has_no_end_token():
  task = tasks.make_task("target_token", vocab_size=64, length=24, target=7)
  cfg = model.ModelConfig(vocab_size=64, max_len=32)
  params = jax.jit(model.init_params, static_argnums=0)(cfg, jax.random.PRNGKey(0))
  prompts = task.sample_prompts(jax.random.PRNGKey(1), 16)
  s = jax.jit(lambda p, k: sampler.sample(p, cfg, prompts, k, max_new_tokens=24,
                                          eos_id=task.eos_id, pad_id=task.pad_id))(
      params, jax.random.PRNGKey(2))
  assert float(s.mask_BxT.min()) == 1.0 and bool(s.truncated_B.all())  # never ends early
  tokens = jnp.full((1, 24), 7).at[0, :6].set(3)
  assert float(task.score(prompts[:1], tokens, jnp.ones((1, 24)))[0]) == 18 / 24


def test_gradient_accumulation_matches_the_whole_minibatch():
  # seq-mean-token-sum is a mean over sequences, so equal micro-batches average to the same
  # gradient. (Parameters are compared through the gradient norm and loss of the first update:
  # after an Adam step, float noise in near-zero gradient entries becomes ±lr either way.)
  base = dict(aggregation="seq-mean-token-sum", updates_per_chunk=1, policy_loss="ppo")
  _, whole, _ = run_chunks(tiny(**base), 1)
  _, accum, _ = run_chunks(tiny(grad_accum_steps=4, **base), 1)
  # (Token-mean metrics such as entropy are means of micro-batch means: not compared.)
  for k in ("loss", "pg_loss", "grad_norm", "mean_score"):
    np.testing.assert_allclose(accum[k], whole[k], rtol=1e-5, err_msg=k)


def test_bfloat16_compute_keeps_float32_master_weights_and_learns():
  state, m, _ = run_chunks(tiny(model={"dtype": "bfloat16"}), 8)
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(state.params)} == {np.dtype("float32")}
  assert all(np.isfinite(v).all() for v in m.values())
  score = m["mean_score"]
  assert np.all(score[:, -5:].mean(1) > score[:, :5].mean(1) + 0.3), score[:, [0, -1]]


def test_chunked_head_gives_the_same_update():
  _, dense, _ = run_chunks(tiny(updates_per_chunk=1), 1)
  _, chunked, _ = run_chunks(tiny(updates_per_chunk=1, logprob_chunk_size=3), 1)
  for k in ("loss", "grad_norm", "entropy", "mean_score"):
    np.testing.assert_allclose(chunked[k], dense[k], rtol=1e-5, atol=1e-6, err_msg=k)
