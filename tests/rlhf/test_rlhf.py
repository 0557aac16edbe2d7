"""The RLHF pipeline: Bradley–Terry by hand, a reward model that learns, a tiny end-to-end run
(KL zero at step 0, frozen reward model and π_ref), and its inputs' errors."""

import hashlib
import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from pg.run import configs
from pg.rlhf import supervised as lm
from pg import rlhf
from pg.policy.generate import pretrained_tree
from pg.rlhf import parts, text
from pg.text import load_tokenizer
from pg import train
from pg.policy.gpt import GPTPolicy, ModelConfig, init_params


def test_bradley_terry_loss_and_gradient_by_hand():
  chosen, rejected = jnp.array([2.0, 0.0]), jnp.array([1.0, 0.5])
  # pair 1: margin 1 → log(1 + e^−1) = 0.31326; pair 2: margin −0.5 → log(1 + e^0.5) = 0.97408
  assert lm.bradley_terry_loss(chosen, rejected) == pytest.approx((0.31326 + 0.97408) / 2,
                                                                  abs=1e-5)
  g_chosen, g_rejected = jax.grad(lm.bradley_terry_loss, argnums=(0, 1))(chosen, rejected)
  sigma = lambda x: 1 / (1 + np.exp(-x))
  expected = -np.array([sigma(-1.0), sigma(0.5)]) / 2  # −σ(r_rej − r_ch) / N
  np.testing.assert_allclose(g_chosen, expected, rtol=1e-5)
  np.testing.assert_allclose(g_rejected, -expected, rtol=1e-5)


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_reward_model_beats_chance_on_held_out_pairs():
  """Preferences from a hidden rule (more of token 3 is better): after 150 steps the held-out
  accuracy must clear chance by 3 standard errors (n = 256: 0.5 + 3·0.031 = 0.59)."""
  policy = GPTPolicy(ModelConfig(vocab_size=8, max_len=10, num_layers=1, d_model=32,
                                 num_heads=2, value_head="shared"))
  rng = np.random.default_rng(0)
  n = 768
  a, b = rng.integers(0, 8, (n, 10)), rng.integers(0, 8, (n, 10))
  a_better = (a == 3).sum(1) > (b == 3).sum(1)
  keep = (a == 3).sum(1) != (b == 3).sum(1)
  a, b, a_better = a[keep], b[keep], a_better[keep]
  chosen = np.where(a_better[:, None], a, b).astype(np.int32)
  rejected = np.where(a_better[:, None], b, a).astype(np.int32)
  last = np.full(len(chosen), 9, np.int32)
  held = 256
  params, losses = lm.train_reward_model(
      policy, chosen[held:], rejected[held:], last[held:], last[held:], steps=150, batch_size=64,
      learning_rate=3e-3, key=jax.random.PRNGKey(0), verbose=False)
  margin = (lm.sequence_reward(params, policy, chosen[:held], last[:held])
            - lm.sequence_reward(params, policy, rejected[:held], last[:held]))
  accuracy = float(np.mean(np.asarray(margin) > 0))
  assert accuracy > 0.5 + 3 * np.sqrt(0.25 / held), accuracy
  assert losses[-20:].mean() < losses[:20].mean()


def _value_policy():
  return GPTPolicy(ModelConfig(vocab_size=8, max_len=10, num_layers=1, d_model=16, num_heads=2,
                               value_head="shared"))


def test_sequence_reward_pools_the_head_over_the_response():
  policy = _value_policy()
  params = policy.init(jax.random.PRNGKey(0))
  tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 10), 0, 8)
  last = jnp.asarray([9, 6, 4])
  _, values = policy.sequence_outputs(params, tokens)
  pooled = lm.sequence_reward(params, policy, tokens, last, pool_from=4)
  want = [float(np.mean(np.asarray(values)[b, 4:int(last[b]) + 1])) for b in range(3)]
  np.testing.assert_allclose(pooled, want, rtol=1e-5)
  np.testing.assert_allclose(lm.sequence_reward(params, policy, tokens, last),
                             np.asarray(values)[np.arange(3), np.asarray(last)], rtol=1e-6)


def test_a_head_only_reward_model_keeps_the_warm_trunk():
  policy = _value_policy()
  warm = policy.init(jax.random.PRNGKey(5))
  x = np.asarray(jax.random.randint(jax.random.PRNGKey(2), (32, 10), 0, 8), np.int32)
  last = np.full(16, 9, np.int32)
  params, _ = lm.train_reward_model(policy, x[:16], x[16:], last, last, steps=5, batch_size=8,
                                    learning_rate=1e-2, key=jax.random.PRNGKey(0), init=warm,
                                    verbose=False, pool_from=3, train_head_only=True)
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  flat_warm = dict(jax.tree_util.tree_flatten_with_path(policy.warm_start(
      policy.init(jax.random.PRNGKey(0)), warm))[0])
  moved = []
  for path, leaf in flat:
    if "value_out" in jax.tree_util.keystr(path):
      moved.append(not np.array_equal(leaf, flat_warm[path]))
    else:
      np.testing.assert_array_equal(leaf, flat_warm[path])  # the trunk did not move
  assert any(moved)  # the head's kernel learned (its bias cancels in r_chosen − r_rejected)


def tiny_rlhf():
  c = configs.base_config()
  c.model = ml_collections.ConfigDict({"name": "llama", "num_layers": 1, "d_model": 32,
                                       "num_heads": 2, "num_kv_heads": 1, "mlp_dim": 64,
                                       "value_head": "none", "dtype": "float32"})
  c.rlhf = ml_collections.ConfigDict({
      "vocab_size": 300, "prompt_len": 4, "response_len": 6, "pi_ref": "", "prompts": "corpus",
      "pretrain_steps": 30, "pretrain_batch": 16, "pretrain_lr": 3e-3,
      "num_pairs": 64, "bt_temperature": 0.1, "heldout_fraction": 0.25,
      "reward_steps": 20, "reward_batch": 16, "reward_lr": 1e-3})
  c.num_seeds, c.num_prompts, c.group_size = 1, 4, 2
  c.kl_placement = "reward"
  c.updates_per_chunk, c.num_chunks = 2, 1
  c.sweep.kl_coef = (0.0, 0.1)
  return c


def digest(path):
  return hashlib.sha1(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("rlhf"))
  config = tiny_rlhf()
  rlhf.run(config, workdir, stages=("pretrain", "preferences", "reward"), verbose=False)
  before = digest(os.path.join(workdir, "reward_model.msgpack"))
  rlhf.run(config, workdir, stages=("rl", "report"), verbose=False)  # stages alone, from files
  return config, workdir, before


@pytest.mark.slow  # default suite under 10 min; CI runs it
def test_pipeline_writes_its_summary_figure_and_samples(pipeline):
  _, workdir, _ = pipeline
  summary = open(os.path.join(workdir, "summary.md")).read()
  for stage in rlhf.STAGES:
    assert f"| {stage} |" in summary
  assert "held-out accuracy vs gold labels" in summary and "β = 0.1" in summary
  assert "| π_ref |" in summary and "| after RL, β = 0.1 |" in summary
  assert os.path.getsize(os.path.join(workdir, "gold_vs_proxy.png")) > 0


@pytest.mark.slow
def test_kl_to_reference_is_zero_at_step_zero_and_gold_is_logged(pipeline):
  _, workdir, _ = pipeline
  rows = [json.loads(line) for line in open(os.path.join(workdir, "rl", "results.jsonl"))]
  first = [r for r in rows if r["update"] == 0]
  assert len(first) == 2, first
  # π = π_ref at step 0: the sampler's cached-decode log-probs and the reference's full forward
  # agree to float32 rounding (~1e-7 per token, over 6 tokens).
  assert all(abs(r["kl_to_ref"]) < 1e-5 for r in first), first
  # The gold score is VADER on the decoded samples (a mean over the batch): it moves.
  assert len({r["gold_score"] for r in rows}) > 1


def restore_rl_state(workdir):
  root = os.path.join(workdir, "rl", "groups", "base")
  (batch,) = os.listdir(root)
  with ocp.CheckpointManager(os.path.abspath(os.path.join(root, batch, "checkpoints"))) as m:
    return m.restore(m.latest_step(), args=ocp.args.StandardRestore())


def assert_frozen(config, workdir):
  """π_ref is bit-identical after RL while the policy moved; the optimizer tracks the policy's
  parameters only (π_ref is not in what it updates), and the reward model is not in the train
  state at all (its parameters are constants of the compiled step)."""
  pi_ref = pretrained_tree(parts.make_policy(config, workdir))
  state = restore_rl_state(workdir)
  moved = jax.tree_util.tree_map(lambda p, r: float(jnp.max(jnp.abs(p[0] - r))),
                                 state["params"], pi_ref)
  assert max(jax.tree_util.tree_leaves(moved)) > 0  # the policy did learn
  jax.tree_util.tree_map(lambda r_R, r: np.testing.assert_array_equal(r_R[0], r),
                         state["ref_params"], pi_ref)
  def adam_states(node):  # the optax chain's states, restored as nested lists and dicts
    if isinstance(node, dict):
      return [node] if "mu" in node else [a for v in node.values() for a in adam_states(v)]
    if isinstance(node, (list, tuple)):
      return [a for v in node for a in adam_states(v)]
    return []
  (adam,) = adam_states(state["opt_state"])
  mu = adam["mu"]
  assert (jax.tree_util.tree_structure(mu) == jax.tree_util.tree_structure(state["params"]))
  assert set(state) == {"params", "ref_params", "opt_state", "baseline_state", "key", "step",
                        "hp", "halted", "past_params", "base"}  # None without staleness, LoRA
  assert state["past_params"] is None and state["base"] is None


@pytest.mark.slow
def test_reward_model_and_reference_stay_frozen(pipeline):
  config, workdir, before = pipeline
  assert digest(os.path.join(workdir, "reward_model.msgpack")) == before
  assert_frozen(config, workdir)


def copy_stage_inputs(source, workdir):
  """π_ref, the reward model and the preferences of a pipeline run: what the RL and report
  stages read."""
  shutil.copytree(os.path.join(source, "pi_ref"), os.path.join(workdir, "pi_ref"))
  for name in ("reward_model.msgpack", "preferences.npz", "summary.json"):
    if os.path.exists(os.path.join(source, name)):
      shutil.copy(os.path.join(source, name), workdir)


@pytest.fixture(scope="module")
def kl_in_loss(pipeline, tmp_path_factory):
  """The RL and report stages again from the pipeline's files, with a k2 KL term in the loss
  and a single β (not swept)."""
  config, source, _ = pipeline
  workdir = str(tmp_path_factory.mktemp("rlhf_kl_loss"))
  copy_stage_inputs(source, workdir)
  config = tiny_rlhf()
  config.kl_placement, config.kl_estimator = "loss", "k2"
  config.sweep.kl_coef = None
  config.hparams.kl_coef = 0.2
  rlhf.run(config, workdir, stages=("rl", "report"), verbose=False)
  return config, workdir


@pytest.mark.slow  # its fixture trains the whole tiny pipeline again (~45 s)
def test_kl_in_the_loss_starts_at_zero_and_keeps_the_reference_frozen(kl_in_loss):
  config, workdir = kl_in_loss
  rows = [json.loads(line) for line in open(os.path.join(workdir, "rl", "results.jsonl"))]
  first = [r for r in rows if r["update"] == 0]
  assert len(first) == config.num_seeds and all(abs(r["kl_to_ref"]) < 1e-5 for r in first)
  assert_frozen(config, workdir)
  summary = open(os.path.join(workdir, "summary.md")).read()
  assert "β = 0.2" in summary  # the report stage reads an unswept β from the config


@pytest.mark.slow  # trains the tiny RL stage again
def test_the_rl_stage_with_lora_trains_adapters_on_pi_ref(pipeline, tmp_path_factory):
  """config.lora: the RL runs keep adapters only (π_ref is their base) and the report stage
  puts them back on π_ref to sample and judge the final policies."""
  _, source, _ = pipeline
  workdir = str(tmp_path_factory.mktemp("rlhf_lora"))
  copy_stage_inputs(source, workdir)
  config = tiny_rlhf()
  config.lora.rank = 2
  config.hparams.learning_rate = 3e-2
  rlhf.run(config, workdir, stages=("rl", "report"), verbose=False)
  rows = [json.loads(line) for line in open(os.path.join(workdir, "rl", "results.jsonl"))]
  assert all(abs(r["kl_to_ref"]) < 1e-5 for r in rows if r["update"] == 0)
  assert any(abs(r["kl_to_ref"]) > 1e-5 for r in rows if r["update"] == 1)
  state = restore_rl_state(workdir)
  assert set(state["params"]) == {"lora"} and state.get("ref_params") is None
  assert "β = 0.1" in open(os.path.join(workdir, "summary.md")).read()
  assert os.path.getsize(os.path.join(workdir, "samples.md")) > 0


def test_bradley_terry_labels_follow_the_sigmoid():
  """Each level of g_a − g_b gets n = 20,000 draws; the share of first-wins must lie within
  4 binomial standard errors of σ(Δ/T)."""
  n, temperature = 20_000, 0.1
  deltas = np.array([-0.3, -0.05, 0.0, 0.02, 0.1, 0.5])
  gold = np.stack([np.repeat(deltas, n), np.zeros(n * len(deltas))], axis=1)
  wins, p = lm.bradley_terry_labels(gold, temperature, np.random.default_rng(0))
  want = 1 / (1 + np.exp(-deltas / temperature))
  np.testing.assert_allclose(p.reshape(len(deltas), n)[:, 0], want, rtol=1e-12)
  share = wins.reshape(len(deltas), n).mean(axis=1)
  se = np.sqrt(want * (1 - want) / n)
  assert np.all(np.abs(share - want) <= 4 * se + 1e-12), (share, want)
  with pytest.raises(ValueError, match="temperature must be > 0"):
    lm.bradley_terry_labels(gold, 0.0, np.random.default_rng(0))


def test_gold_scorer_is_vader_sentiment():
  gold = parts.gold_scorer()
  assert gold("this is a wonderful, great and happy result") > 0.5
  assert gold("this is a terrible, awful and sad failure") < -0.5
  assert gold("the file is in the directory") == 0.0  # ("value" alone scores 0.34)


def test_init_from_errors_name_the_field(tmp_path):
  cfg = ModelConfig(vocab_size=16, max_len=8, num_layers=1, d_model=16, num_heads=2,
                    value_head="none")
  with pytest.raises(FileNotFoundError, match="config.init_from"):
    train.load_params(str(tmp_path / "missing.msgpack"), GPTPolicy(cfg))
  path = str(tmp_path / "p.msgpack")
  train.save_params(path, init_params(cfg, jax.random.PRNGKey(0)))
  other = ModelConfig(vocab_size=16, max_len=8, num_layers=1, d_model=32, num_heads=2,
                      value_head="none")
  with pytest.raises(ValueError, match="do not fit config.model"):
    train.load_params(path, GPTPolicy(other))


def test_the_bpe_round_trips_text_and_ends_documents(tmp_path):
  """The byte-level BPE trained on the corpus encodes any text and decodes it back; the
  corpus stream ends each document with END; too small a vocabulary is refused."""
  docs = text.documents()
  assert sum(len(d.split()) for d in docs) > 30_000  # the documentation that ships with CPython
  text.train_tokenizer(docs[:10], 400, str(tmp_path / "tok"))
  tok = load_tokenizer(str(tmp_path / "tok"))
  assert tok.vocab_size == 400 and tok.eos_ids == (0,) and tok.pad_id == 1
  sentence = "The value is used, and the object is returned. Ünïcödé ✓ 42!"
  assert tok.decode(tok.encode(sentence)) == sentence
  ids = text.encode_corpus(tok, ["a b", "c"])
  assert list(ids).count(0) == 2 and ids[-1] == 0
  with pytest.raises(ValueError, match=r"config.rlhf.vocab_size must exceed 258"):
    text.train_tokenizer(docs[:2], 200, str(tmp_path / "small"))
  with pytest.raises(ValueError, match="unknown stage"):
    rlhf.run(tiny_rlhf(), "/tmp/unused", stages=("train",))


@pytest.mark.parametrize("fields,match", [
    ({"reward_pooling": "max"}, "config.rlhf.reward_pooling must be one of"),
    ({"reward_train": "trunk"}, "config.rlhf.reward_train must be one of"),
    ({"reward_train": "head", "reward_init": "scratch"}, "set config.rlhf.reward_init = 'pi_ref'"),
    ({"eval_prompts": -1}, "config.rlhf.eval_prompts must be an int >= 0"),
    ({"eval_prompts": 8, "eval_samples": 0}, "config.rlhf.eval_samples must be >= 1"),
])
def test_reward_model_options_are_checked_by_name(fields, match):
  config = tiny_rlhf()
  with config.rlhf.unlocked():
    config.rlhf.update(fields)
  from pg.rlhf import pipeline
  with pytest.raises(ValueError, match=match):
    pipeline.validate(config)


@pytest.mark.slow
def test_pi_ref_is_a_hugging_face_checkpoint_the_rl_stage_loads(pipeline):
  """π_ref is written as config.json + model.safetensors + the BPE's tokenizer files, and the
  RL stage's policy and reference come from it through config.model.init_from."""
  config, workdir, _ = pipeline
  pi_ref = os.path.join(workdir, "pi_ref")
  for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
    assert os.path.exists(os.path.join(pi_ref, name)), name
  c = rlhf.rl_config(config, workdir)
  assert c.model.init_from == pi_ref and not c.init_from
  assert_frozen(config, workdir)


def test_the_welch_test_and_the_tests_table():
  """welch() against scipy's Welch t-test and the Welch–Satterthwaite interval by hand; the
  table names each β against the smallest."""
  from scipy import stats
  from pg.rlhf import report
  from pg.run import plotting
  a, b = np.array([0.1, 0.2, 0.15, 0.12]), np.array([0.3, 0.35, 0.5])
  d, half, p = plotting.welch(a, b)
  assert d == pytest.approx(b.mean() - a.mean())
  assert p == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)
  va, vb = a.var(ddof=1) / 4, b.var(ddof=1) / 3
  df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)
  assert half == pytest.approx(stats.t.ppf(0.975, df) * np.sqrt(va + vb))
  rows = [{"kl_coef": beta, "seed": s, "update": u, "gold_score": beta + 0.01 * s,
           "mean_score": 1.0 - beta, "kl_to_ref": 1.0} for beta in (0.0, 0.1) for s in range(3)
          for u in range(10)]
  table, numbers = report.tests_table(report.curves(rows, 0.0))
  assert "| 0.1 − 0 |" in table and numbers["β = 0.1 − 0: gold_score difference"] == pytest.approx(0.1)


def test_the_change_table_tests_each_runs_first_against_its_last_updates():
  """Gold rising by 0.5 + 0.1·seed in every run: the change, its t-interval and the one-sample
  t-test are scipy's on the per-run differences."""
  from scipy import stats
  from pg.rlhf import report
  rows = [{"kl_coef": 0.0, "seed": s, "update": u, "mean_score": 0.0, "kl_to_ref": 1.0,
           "gold_score": (0.5 + 0.1 * s) * (u >= 10)} for s in range(3) for u in range(20)]
  table, numbers = report.change_table(report.curves(rows, 0.0))
  changes = np.array([0.5, 0.6, 0.7])
  assert numbers["β = 0: gold_score change"] == pytest.approx(changes.mean())
  assert numbers["β = 0: gold_score change p"] == pytest.approx(
      stats.ttest_1samp(changes, 0.0).pvalue)
  assert "0.000 → 0.600: +0.600 ±" in table


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.mark.slow
def test_a_checkpoint_of_your_own_with_chat_prompts(pipeline, tmp_path):
  """config.rlhf.pi_ref names a checkpoint (here the pipeline's π_ref with a chat template and
  a longer context, standing in for SmolLM2): no pretraining, chat prompts left-padded with a
  mask through preferences, the reward model and RL, where π = π_ref at step 0 (KL 0: the
  sampler and the trainer read the padded prompts alike)."""
  _, source, _ = pipeline
  mine = str(tmp_path / "my_model")
  shutil.copytree(os.path.join(source, "pi_ref"), mine)
  with open(os.path.join(mine, "chat_template.jinja"), "w") as f:
    f.write(CHATML)
  with open(os.path.join(mine, "config.json")) as f:
    cfg = json.load(f)
  cfg["max_position_embeddings"] = 128
  with open(os.path.join(mine, "config.json"), "w") as f:
    json.dump(cfg, f)
  config = tiny_rlhf()
  config.rlhf.update(pi_ref=mine, prompts="chat", prompt_len=88)
  with config.rlhf.unlocked():  # SmolLM2's reward model: a head on π_ref's frozen trunk
    config.rlhf.update(reward_init="pi_ref", reward_pooling="mean", reward_train="head",
                       eval_prompts=4, eval_samples=2)
  workdir = str(tmp_path / "run")
  summary = rlhf.run(config, workdir, verbose=False)
  assert "not pretrained here" in summary["pretrain"]["π_ref"]
  assert not os.path.exists(os.path.join(workdir, "pi_ref"))
  data = np.load(os.path.join(workdir, "preferences.npz"))
  assert 0 < data["prompt_mask"].mean() < 1  # left-padded rows of different lengths
  rows = [json.loads(line) for line in open(os.path.join(workdir, "rl", "results.jsonl"))]
  first = [r for r in rows if r["update"] == 0]
  assert first and all(abs(r["kl_to_ref"]) < 1e-4 for r in first), first
  summary_md = open(os.path.join(workdir, "summary.md")).read()
  assert "Write one sentence about" in summary_md
  assert "## Gold after RL, on fresh responses" in summary_md  # 4 prompts × 2 per policy
  assert summary_md.count("| β = 0.1 | ") >= 1 and "p (one-sample t-test)" in summary_md
