"""The RLHF pipeline, stage by stage, on a CPU in minutes.

    1. pretrain     π_ref: next-token cross-entropy on `pg.text`'s corpus (word vocabulary)
    2. preferences  pairs of π_ref samples per prompt, labelled by a Bradley–Terry draw on a gold
                    scorer, VADER sentiment: P(a ≻ b) = σ((g(a) − g(b)) / temperature)
    3. reward       a Flax transformer with a scalar head, Bradley–Terry loss, warm-started from
                    π_ref; held-out accuracy against the gold labels and the gold scores
    4. rl           the pg train step against the frozen reward model, KL to π_ref (placement and
                    estimator by config), a sweep over β in one compile; the gold score is logged
                    beside the proxy through the Python-reward path
    5. report       gold and proxy against √KL for each β (Gao et al., 2022), samples before and
                    after RL, summary.md

Each stage reads the previous stages' files in the workdir, so each can run alone.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from pg.rlhf import supervised as lm
from pg.run import plotting
from pg.policy import sampler
from pg.run import schema, sweep
from pg import tasks
from pg.rlhf import text
from pg import train
from pg.policy import build_policy
from pg.run.tables import markdown_table

STAGES = ("pretrain", "preferences", "reward", "rl", "report")
TASK_NAME = "rlhf_sentiment"
# The workdir files each stage writes, and those it reads (from earlier stages).
WRITES = {"pretrain": "pi_ref.msgpack", "preferences": "preferences.npz",
          "reward": "reward_model.msgpack", "rl": "rl/results.jsonl"}
READS = {"preferences": ("pi_ref.msgpack",),
         "reward": ("pi_ref.msgpack", "preferences.npz"),
         "rl": ("pi_ref.msgpack", "reward_model.msgpack"),
         "report": ("pi_ref.msgpack", "reward_model.msgpack", "rl/results.jsonl")}
POSITIVE_INTS = ("vocab_size", "prompt_len", "response_len", "pretrain_steps", "pretrain_batch",
                 "num_pairs", "reward_steps", "reward_batch")
POSITIVE_FLOATS = ("pretrain_lr", "reward_lr", "bt_temperature")
# The config's `rlhf` block: every field the pipeline reads (`pg.run.schema` refuses others).
BLOCK_FIELDS = POSITIVE_INTS + POSITIVE_FLOATS + ("heldout_fraction",)


def _path(workdir, name):
  return os.path.join(workdir, name)


def gold_scorer():
  """VADER's compound sentiment in [−1, 1] of a text (rule-based; nobody backpropagates it)."""
  from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
  analyzer = SentimentIntensityAnalyzer()
  return lambda s: float(analyzer.polarity_scores(s)["compound"])


def corpus(config):
  raw = text.corpus_text()
  vocab = text.build_vocab(raw, config.rlhf.vocab_size)
  ids = vocab.encode(raw)
  length = config.rlhf.prompt_len + config.rlhf.response_len
  return vocab, text.windows(ids, length, stride=max(1, length // 3))


def make_policy(config, value_head="none"):
  """config.model's architecture at the pipeline's vocabulary and context: π_ref (no value
  head) or the reward model (`value_head="shared"`: its scalar head)."""
  return build_policy({**config.model.to_dict(), "value_head": value_head},
                      vocab_size=config.rlhf.vocab_size,
                      max_len=config.rlhf.prompt_len + config.rlhf.response_len,
                      masked_ids=(text.Vocab(text.SPECIALS).pad_id,))


def prompts_from(windows_NxL, prompt_len, key, n):
  return jnp.asarray(windows_NxL)[jax.random.randint(key, (n,), 0, windows_NxL.shape[0]),
                                  :prompt_len]


def stage_pretrain(config, workdir, verbose=True):
  _, windows_NxL = corpus(config)
  r = config.rlhf
  params, losses = lm.pretrain(make_policy(config), windows_NxL, steps=r.pretrain_steps,
                               batch_size=r.pretrain_batch, learning_rate=r.pretrain_lr,
                               key=jax.random.PRNGKey(config.seed), verbose=verbose)
  train.save_params(_path(workdir, "pi_ref.msgpack"), params)
  return {"pretrain loss, first 20 steps": float(losses[:20].mean()),
          "pretrain loss, last 20 steps": float(losses[-20:].mean())}


def stage_preferences(config, workdir, verbose=True):
  """Two π_ref samples per prompt, gold-scored, labelled by a Bradley–Terry draw; saved .npz."""
  vocab, windows_NxL = corpus(config)
  r = config.rlhf
  policy = make_policy(config)
  params = train.load_params(_path(workdir, "pi_ref.msgpack"), policy)
  key = jax.random.PRNGKey(config.seed + 1)
  prompts = prompts_from(windows_NxL, r.prompt_len, jax.random.fold_in(key, 0), r.num_pairs)
  both = jnp.repeat(prompts, 2, axis=0)
  s = jax.jit(lambda p, k: sampler.sample(
      policy, p, both, k, max_new_tokens=r.response_len, eos_id=vocab.eos_id,
      pad_id=vocab.pad_id))(params, jax.random.fold_in(key, 1))
  texts = [vocab.decode(row) for row in np.asarray(s.tokens_BxT)]
  gold = gold_scorer()
  g = np.asarray([gold(t) for t in tqdm(texts, desc="preferences: gold scores (VADER)",
                                         unit="text", disable=not verbose)],
                 np.float32).reshape(-1, 2)
  first_wins, _ = lm.bradley_terry_labels(g, r.bt_temperature, np.random.default_rng(config.seed))
  tokens = np.asarray(s.tokens_BxT).reshape(-1, 2, r.response_len)
  mask = np.asarray(s.mask_BxT).reshape(-1, 2, r.response_len)
  order = np.where(first_wins[:, None], [0, 1], [1, 0])  # chosen, rejected
  pick = lambda x: np.take_along_axis(x, order[:, :, None], axis=1)
  np.savez(_path(workdir, "preferences.npz"), prompts=np.asarray(prompts),
           tokens=pick(tokens), mask=pick(mask),
           gold=np.take_along_axis(g, order, axis=1))
  return {"preference pairs": int(len(g)),
          "pairs whose gold scores differ": float(np.mean(g[:, 0] != g[:, 1])),
          "gold score of π_ref samples (mean)": float(g.mean())}


def _pair_arrays(data, prompt_len, idx):
  full = lambda k: np.concatenate([data["prompts"][idx], data["tokens"][idx, k]], axis=1)
  last = lambda k: prompt_len - 1 + data["mask"][idx, k].sum(axis=1).astype(np.int32)
  return full(0), full(1), last(0), last(1)


def stage_reward(config, workdir, verbose=True):
  r = config.rlhf
  data = dict(np.load(_path(workdir, "preferences.npz")))
  n = len(data["prompts"])
  held = max(1, int(n * r.heldout_fraction))
  train_idx, test_idx = np.arange(held, n), np.arange(held)
  rm_policy = make_policy(config, value_head="shared")
  pi_ref = train.load_params(_path(workdir, "pi_ref.msgpack"), make_policy(config))
  params, losses = lm.train_reward_model(
      rm_policy, *_pair_arrays(data, r.prompt_len, train_idx), steps=r.reward_steps,
      batch_size=r.reward_batch, learning_rate=r.reward_lr,
      key=jax.random.PRNGKey(config.seed + 2), init=pi_ref, verbose=verbose)
  train.save_params(_path(workdir, "reward_model.msgpack"), params)
  ch, rj, ch_last, rj_last = _pair_arrays(data, r.prompt_len, test_idx)
  reward = jax.jit(lambda p, x, last: lm.sequence_reward(p, rm_policy, x, last))
  margin = np.asarray(reward(params, ch, ch_last) - reward(params, rj, rj_last))
  gold = data["gold"][test_idx]
  differ = gold[:, 0] != gold[:, 1]
  return {"reward model loss, last 20 steps": float(losses[-20:].mean()),
          "held-out pairs": int(held),
          "held-out accuracy vs gold labels": float(np.mean(margin > 0)),
          "held-out accuracy vs gold scores (pairs that differ)": float(
              np.mean((margin > 0)[differ] == (gold[differ, 0] > gold[differ, 1])))}


def make_task(config, workdir) -> tasks.Task:
  """Prompts from the corpus, the frozen reward model as the score (its params are constants
  of the compiled step: no gradient can reach them), VADER as a logged gold metric."""
  vocab, windows_NxL = corpus(config)
  r = config.rlhf
  rm_policy = make_policy(config, value_head="shared")
  rm = train.load_params(_path(workdir, "reward_model.msgpack"), rm_policy)
  windows = jnp.asarray(windows_NxL)
  gold = gold_scorer()

  def sample_prompts(key, n):
    return prompts_from(windows, r.prompt_len, key, n)

  def score(prompts_BxP, tokens_BxT, mask_BxT):
    full = jnp.concatenate([prompts_BxP, tokens_BxT], axis=1)
    return lm.sequence_reward(jax.lax.stop_gradient(rm), rm_policy, full,
                              lm.last_index(mask_BxT, r.prompt_len))

  gold_task = tasks.python_task("gold", lambda p, y: gold(vocab.decode(y)),
                                vocab_size=vocab.size, prompt_len=r.prompt_len,
                                max_new_tokens=r.response_len, eos_id=vocab.eos_id,
                                pad_id=vocab.pad_id, sample_prompts=sample_prompts)
  return tasks.Task(TASK_NAME, vocab.size, r.prompt_len, r.response_len, vocab.eos_id,
                    vocab.pad_id, sample_prompts, score, vocab.forms,
                    extra_metrics=lambda p, y, m: {"gold_score": gold_task.score(p, y, m)})


def rl_config(config, workdir):
  """The RL stage's config: the base config's fields (the rlhf block is the pipeline's)."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    del c["rlhf"]
    c.task.name, c.task.options = TASK_NAME, {}
    c.init_from = _path(workdir, "pi_ref.msgpack")
    c.model.value_head = "none"
  return c


def stage_rl(config, workdir, verbose=True):
  c = rl_config(config, workdir)
  summary = sweep.run(c, _path(workdir, "rl"), task=make_task(config, workdir), verbose=verbose,
                      log=print if verbose else (lambda *_: None))
  return {"RL settings (β × seeds)": f"{len(summary)} × {c.num_seeds}"}


def stage_report(config, workdir, verbose=True):
  """gold_vs_proxy.png, samples before and after RL, and summary.md's table."""
  rows = [json.loads(line) for line in open(_path(workdir, "rl/results.jsonl"))]
  for r in rows:  # β is a column only when swept; otherwise every run has the config's
    r.setdefault("kl_coef", float(config.hparams.kl_coef))
  betas = sorted({r["kl_coef"] for r in rows})
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(12, 4))
  finals = {}
  for i, beta in enumerate(betas):
    mine = [r for r in rows if r["kl_coef"] == beta]
    seeds = sorted({r["seed"] for r in mine})
    U = 1 + max(r["update"] for r in mine)
    get = lambda k: np.asarray([[next(r[k] for r in mine if r["seed"] == s and r["update"] == u)
                                 for u in range(U)] for s in seeds])
    window = max(1, U // 10)
    kl = plotting.smooth(get("kl_to_ref"), window).mean(axis=0)
    x = np.sqrt(np.maximum(kl, 0.0))
    for ax, key in zip(axes, ("gold_score", "mean_score")):
      ax.plot(x, plotting.smooth(get(key), window).mean(axis=0), color=f"C{i}",
              label=f"β = {beta:g} ({len(seeds)} seeds)")
    finals[beta] = {k: float(get(k)[:, -window:].mean()) for k in
                    ("gold_score", "mean_score", "kl_to_ref")}
  for ax, title in zip(axes, ("gold score (VADER)", "proxy score (reward model)")):
    ax.set_xlabel("√KL(π ‖ π_ref) (nats, per sequence)")
    ax.set_ylabel(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(_path(workdir, "gold_vs_proxy.png"), dpi=120)
  plt.close(fig)
  samples = samples_before_after(config, workdir, betas)
  with open(_path(workdir, "samples.md"), "w") as f:
    f.write(samples)
  return {f"β = {b:g}: gold / proxy / KL, last 10%": (
      f"{v['gold_score']:.3f} / {v['mean_score']:.3f} / {v['kl_to_ref']:.2f}")
          for b, v in finals.items()}


def final_policies(workdir):
  """The RL runs' final params, restored from their batch checkpoints: (labels, params_R)."""
  import orbax.checkpoint as ocp
  out = []
  root = _path(workdir, "rl/groups")
  for group in sorted(os.listdir(root)):
    for batch in sorted(os.listdir(os.path.join(root, group))):
      d = os.path.join(root, group, batch)
      labels = json.load(open(os.path.join(d, "config.json")))["runs"]
      with ocp.CheckpointManager(os.path.abspath(os.path.join(d, "checkpoints"))) as manager:
        state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore())
      for i, label in enumerate(labels):
        out.append((label, jax.tree_util.tree_map(lambda x: x[i], state["params"])))
  return out


def samples_before_after(config, workdir, betas, n=4):
  """Markdown: the same prompts answered by π_ref and by seed 0 of each β after RL, with gold
  and proxy scores."""
  vocab, windows_NxL = corpus(config)
  r = config.rlhf
  policy = make_policy(config)
  task = make_task(config, workdir)
  prompts = prompts_from(windows_NxL, r.prompt_len, jax.random.PRNGKey(12345), n)
  gold = gold_scorer()
  policies = [("π_ref", train.load_params(_path(workdir, "pi_ref.msgpack"), policy))]
  beta_of = lambda label: label.get("kl_coef", float(config.hparams.kl_coef))
  policies += [(f"after RL, β = {beta_of(label):g}", p) for label, p in
               final_policies(workdir) if label["seed"] == 0 and beta_of(label) in betas]
  rows = []
  for name, params in policies:
    s = sampler.sample(policy, params, prompts, jax.random.PRNGKey(7), max_new_tokens=r.response_len,
                       eos_id=vocab.eos_id, pad_id=vocab.pad_id)
    proxy = np.asarray(task.score(prompts, s.tokens_BxT, s.mask_BxT))
    for i in range(n):
      response = vocab.decode(np.asarray(s.tokens_BxT[i]))
      rows.append([name, vocab.decode(np.asarray(prompts[i])), response, f"{gold(response):.2f}",
                   f"{proxy[i]:.2f}"])
  return markdown_table(["policy", "prompt", "response", "gold", "proxy"], rows) + "\n"


def validate(config):
  """The rlhf block and the RL stage's config, checked with the field named before any stage
  runs (a bad RL setting should not wait for the pretraining and reward stages)."""
  r = config.get("rlhf")
  if r is None:
    raise ValueError("config.rlhf: the pipeline's config needs an rlhf block (configs/rlhf.py).")
  for name in POSITIVE_INTS:
    v = r.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
      raise ValueError(f"config.rlhf.{name} must be a positive int, got {v!r}.")
  if r.vocab_size <= len(text.SPECIALS):
    raise ValueError(f"config.rlhf.vocab_size must exceed {len(text.SPECIALS)} (the special "
                     f"tokens {text.SPECIALS}), got {r.vocab_size}.")
  for name in POSITIVE_FLOATS:
    v = r.get(name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
      raise ValueError(f"config.rlhf.{name} must be > 0, got {v!r}.")
  f, n = r.get("heldout_fraction"), r.num_pairs
  if (isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1
      or n - max(1, int(n * f)) < 1):
    raise ValueError(f"config.rlhf.heldout_fraction must lie in [0, 1) and leave at least one of "
                     f"the config.rlhf.num_pairs = {n} pairs to train on, got {f!r}.")
  _validate_rl(config)


def _validate_rl(config):
  """`train.build` (and the sweep's checks) on the RL stage's config, with a stand-in task of
  the reward model's shapes in place of the reward model, which may not exist yet."""
  r, ids = config.rlhf, text.Vocab(text.SPECIALS)
  stand_in = tasks.Task(TASK_NAME, r.vocab_size, r.prompt_len, r.response_len, ids.eos_id,
                        ids.pad_id, lambda key, n: jnp.zeros((n, r.prompt_len), jnp.int32),
                        lambda p, t, m: jnp.zeros(t.shape[:1], jnp.float32))
  c = rl_config(config, "")
  with c.unlocked():
    c.init_from = ""  # written by the pretrain stage
  sweep.swept(c)
  sweep.groups(c, stand_in)  # every structural setting (one group when none is swept)


def check_stages(stages, workdir):
  """Raises unless every stage is known and finds the files it reads: in the workdir, or
  written by a stage before it in `stages`."""
  unknown = [s for s in stages if s not in STAGES]
  if unknown:
    raise ValueError(f"unknown stage(s) {unknown}; stages: {', '.join(STAGES)}.")
  written = set()
  for stage in stages:
    for name in READS.get(stage, ()):
      if name not in written and not os.path.exists(_path(workdir, name)):
        maker = next(s for s, f in WRITES.items() if f == name)
        raise FileNotFoundError(
            f"stage {stage!r} reads {name}, written by stage {maker!r}, and it is not in the "
            f"workdir {workdir!r}: run the stages before {stage!r} first (or every stage), or "
            f"point --workdir at a run that has it.")
    written.add(WRITES.get(stage))


def run(config, workdir, stages=STAGES, verbose=True):
  """Runs `stages` in order, appending each one's metrics to summary.json; writes summary.md.
  `stages`: names from STAGES (or one comma-separated string)."""
  if isinstance(stages, str):
    stages = [s.strip() for s in stages.split(",") if s.strip()]
  check_stages(stages, workdir)
  schema.check(config, blocks={"rlhf": dict.fromkeys(BLOCK_FIELDS)})
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  path = _path(workdir, "summary.json")
  summary = json.load(open(path)) if os.path.exists(path) else {}
  fns = {"pretrain": stage_pretrain, "preferences": stage_preferences, "reward": stage_reward,
         "rl": stage_rl, "report": stage_report}
  for stage in stages:
    summary[stage] = fns[stage](config, workdir, verbose=verbose)
    with open(path, "w") as f:
      json.dump(summary, f, indent=2)
  rows = []
  for stage, metrics in summary.items():
    for k, v in metrics.items():
      value = v if isinstance(v, str) else f"{v:,}" if isinstance(v, int) else f"{v:.3g}"
      rows.append([stage, k, value])
  body = markdown_table(["stage", "metric", "value"], rows) + "\n"
  if os.path.exists(_path(workdir, "samples.md")):
    body += "\n## Samples before and after RL\n\n" + open(_path(workdir, "samples.md")).read()
  with open(_path(workdir, "summary.md"), "w") as f:
    f.write(body)
  return summary
