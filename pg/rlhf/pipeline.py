"""The RLHF pipeline, stage by stage, on a CPU in minutes.

    1. pretrain     π_ref: a byte-level BPE trained with `tokenizers` on the corpus, and a
                    Llama-family model (config.model) trained on it by next-token cross-entropy,
                    saved as a Hugging Face model directory (<workdir>/pi_ref). Skipped when
                    config.rlhf.pi_ref names a checkpoint of your own (SmolLM2, say)
    2. preferences  pairs of π_ref samples per prompt, labelled by a Bradley–Terry draw on a gold
                    scorer, VADER sentiment: P(a ≻ b) = σ((g(a) − g(b)) / temperature)
    3. reward       π_ref's architecture with a scalar head, Bradley–Terry loss, its trunk
                    warm-started from π_ref (config.rlhf.reward_init = "pi_ref") or fresh
                    ("scratch"), trained whole (reward_train = "all") or only its head on
                    π_ref's frozen trunk ("head"), scoring at the last token (reward_pooling =
                    "last") or by the head's mean over the response ("mean"); held-out accuracy
                    against the gold labels and the gold scores
    4. rl           the pg train step against the frozen reward model, KL to π_ref (placement and
                    estimator by config), a sweep over β in one compile; the policy and π_ref are
                    loaded from π_ref's directory as any user's checkpoint is
                    (config.model.init_from); the gold score is logged beside the proxy
    5. report       gold and proxy against √KL for each β (Gao et al., 2022) with Welch tests
                    between the β, samples before and after RL, summary.md

Each stage reads the previous stages' files in the workdir, so each can run alone.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from pg import tasks, train
from pg.policy import build_policy, sampler
from pg.policy.base import with_lora
from pg.policy.generate import pretrained_tree
from pg.rlhf import parts, report
from pg.rlhf import supervised as lm
from pg.rlhf import text
from pg.run import schema, sweep
from pg.run.tables import markdown_table
from pg.text import load_tokenizer

STAGES = ("pretrain", "preferences", "reward", "rl", "report")
TASK_NAME = "rlhf_sentiment"
# The workdir files each stage writes, and those it reads (from earlier stages).
WRITES = {"pretrain": "pi_ref", "preferences": "preferences.npz",
          "reward": "reward_model.msgpack", "rl": "rl/results.jsonl"}
READS = {"preferences": ("pi_ref",),
         "reward": ("pi_ref", "preferences.npz"),
         "rl": ("pi_ref", "reward_model.msgpack"),
         "report": ("pi_ref", "reward_model.msgpack", "rl/results.jsonl")}
POSITIVE_INTS = ("vocab_size", "prompt_len", "response_len", "pretrain_steps", "pretrain_batch",
                 "num_pairs", "reward_steps", "reward_batch")
POSITIVE_FLOATS = ("pretrain_lr", "reward_lr", "bt_temperature")
# The config's `rlhf` block: every field the pipeline reads (`pg.run.schema` refuses others).
BLOCK_FIELDS = POSITIVE_INTS + POSITIVE_FLOATS + ("heldout_fraction", "pi_ref", "prompts",
                                                  "reward_init", "reward_pooling",
                                                  "reward_train", "eval_prompts", "eval_samples")
# The reward model's trunk: π_ref's weights, or a fresh one of the same architecture.
REWARD_INITS = ("pi_ref", "scratch")
# Its score: the head at the last token, or the head's mean over the response's tokens.
REWARD_POOLINGS = ("last", "mean")
# What Bradley–Terry trains: the whole model, or the scalar head on a frozen (warm) trunk.
REWARD_TRAINS = ("all", "head")


def pool_from(config):
  """`sequence_reward`'s pool_from for config.rlhf.reward_pooling."""
  r = config.rlhf
  return r.prompt_len if r.get("reward_pooling", "last") == "mean" else None


_path = parts.path


def stage_pretrain(config, workdir, verbose=True):
  """The BPE tokenizer, then π_ref trained on the corpus in its ids; both saved as one Hugging
  Face model directory."""
  r = config.rlhf
  if r.get("pi_ref"):
    return {"π_ref": f"{r.pi_ref} (config.rlhf.pi_ref; not pretrained here)"}
  from pg.policy.hf.checkpoint import save_pretrained
  tok_dir = _path(workdir, "tokenizer")
  text.train_tokenizer(text.documents(), r.vocab_size, tok_dir)
  tok = load_tokenizer(tok_dir)
  windows_NxL = parts.corpus_windows(tok, r.prompt_len + r.response_len)
  policy = build_policy({**config.model.to_dict(), "value_head": "none"},
                        vocab_size=tok.vocab_size, max_len=r.prompt_len + r.response_len,
                        masked_ids=parts.masked_ids(tok))
  params, losses = lm.pretrain(policy, windows_NxL, steps=r.pretrain_steps,
                               batch_size=r.pretrain_batch, learning_rate=r.pretrain_lr,
                               key=jax.random.PRNGKey(config.seed), verbose=verbose)
  save_pretrained(params, policy, _path(workdir, "pi_ref"), tokenizer_from=tok_dir,
                  overwrite=True)
  return {"BPE vocabulary (ids)": int(tok.vocab_size),
          "corpus windows": int(windows_NxL.shape[0]),
          "pretrain loss, first 20 steps": float(losses[:20].mean()),
          "pretrain loss, last 20 steps": float(losses[-20:].mean())}


def stage_preferences(config, workdir, verbose=True):
  """Two π_ref samples per prompt, gold-scored, labelled by a Bradley–Terry draw; saved .npz."""
  r = config.rlhf
  tok = parts.tokenizer(config, workdir)
  prompts = parts.Prompts(config, tok)
  policy = parts.make_policy(config, workdir, tok=tok)
  params = pretrained_tree(policy)
  eos, pad = parts.ids(tok)
  key = jax.random.PRNGKey(config.seed + 1)
  prompts_NxP = prompts.sample(jax.random.fold_in(key, 0), r.num_pairs)
  mask_NxP = prompts.mask(prompts_NxP)
  s = jax.jit(lambda p, x, m, k: sampler.sample(
      policy, p, x, k, max_new_tokens=r.response_len, eos_id=eos[0], eos_ids=eos, pad_id=pad,
      group_size=2, prompt_mask_NxP=m))(params, prompts_NxP, mask_NxP,
                                       jax.random.fold_in(key, 1))
  texts = [parts.response_text(tok, row, m) for row, m in
           zip(np.asarray(s.tokens_BxT), np.asarray(s.mask_BxT))]
  gold = parts.gold_scorer()
  g = np.asarray([gold(t) for t in tqdm(texts, desc="preferences: gold scores (VADER)",
                                         unit="text", disable=not verbose)],
                 np.float32).reshape(-1, 2)
  first_wins, _ = lm.bradley_terry_labels(g, r.bt_temperature, np.random.default_rng(config.seed))
  tokens = np.asarray(s.tokens_BxT).reshape(-1, 2, r.response_len)
  mask = np.asarray(s.mask_BxT).reshape(-1, 2, r.response_len)
  order = np.where(first_wins[:, None], [0, 1], [1, 0])  # chosen, rejected
  pick = lambda x: np.take_along_axis(x, order[:, :, None], axis=1)
  prompt_mask = (np.ones(prompts_NxP.shape, np.float32) if mask_NxP is None
                 else np.asarray(mask_NxP))
  np.savez(_path(workdir, "preferences.npz"), prompts=np.asarray(prompts_NxP),
           prompt_mask=prompt_mask, tokens=pick(tokens), mask=pick(mask),
           gold=np.take_along_axis(g, order, axis=1))
  return {"preference pairs": int(len(g)),
          "pairs whose gold scores differ": float(np.mean(g[:, 0] != g[:, 1])),
          "gold score of π_ref samples (mean)": float(g.mean()),
          "π_ref responses cut at response_len": float(np.mean(np.asarray(s.truncated_B)))}


def _pair_arrays(data, prompt_len, idx):
  """(chosen, rejected, their last-token indices, their masks) of pairs `idx`, prompt ⧺ response."""
  full = lambda k: np.concatenate([data["prompts"][idx], data["tokens"][idx, k]], axis=1)
  last = lambda k: prompt_len - 1 + data["mask"][idx, k].sum(axis=1).astype(np.int32)
  mask = np.concatenate([data["prompt_mask"][idx],
                         np.ones(data["tokens"][idx, 0].shape, np.float32)], axis=1)
  return full(0), full(1), last(0), last(1), mask, mask


def stage_reward(config, workdir, verbose=True):
  r = config.rlhf
  data = dict(np.load(_path(workdir, "preferences.npz")))
  n = len(data["prompts"])
  held = max(1, int(n * r.heldout_fraction))
  train_idx, test_idx = np.arange(held, n), np.arange(held)
  rm_policy = parts.make_policy(config, workdir, value_head="shared")
  warm = rm_policy.pretrained_params() if r.get("reward_init", "pi_ref") == "pi_ref" else None
  ch, rj, ch_last, rj_last, ch_mask, rj_mask = _pair_arrays(data, r.prompt_len, train_idx)
  params, losses = lm.train_reward_model(
      rm_policy, ch, rj, ch_last, rj_last, steps=r.reward_steps, batch_size=r.reward_batch,
      learning_rate=r.reward_lr, key=jax.random.PRNGKey(config.seed + 2),
      init=warm, verbose=verbose, chosen_mask_NxL=ch_mask,
      rejected_mask_NxL=rj_mask, pool_from=pool_from(config),
      train_head_only=r.get("reward_train", "all") == "head")
  train.save_params(_path(workdir, "reward_model.msgpack"), params)
  ch, rj, ch_last, rj_last, ch_mask, rj_mask = _pair_arrays(data, r.prompt_len, test_idx)
  reward = jax.jit(lambda p, x, last, m: lm.sequence_reward(p, rm_policy, x, last, m,
                                                          pool_from(config)))
  margin = np.asarray(reward(params, ch, ch_last, ch_mask) - reward(params, rj, rj_last, rj_mask))
  gold = data["gold"][test_idx]
  differ = gold[:, 0] != gold[:, 1]
  return {"reward model loss, last 20 steps": float(losses[-20:].mean()),
          "held-out pairs": int(held),
          "held-out accuracy vs gold labels": float(np.mean(margin > 0)),
          "held-out accuracy vs gold scores (pairs that differ)": float(
              np.mean((margin > 0)[differ] == (gold[differ, 0] > gold[differ, 1]))
              if differ.any() else np.nan)}


def make_task(config, workdir, tok=None) -> tasks.Task:
  """The pipeline's prompts, the frozen reward model as the score (its params are closed over:
  no gradient can reach them), VADER on the decoded response as a logged gold metric."""
  r = config.rlhf
  tok = tok if tok is not None else parts.tokenizer(config, workdir)
  prompts = parts.Prompts(config, tok)
  eos, pad = parts.ids(tok)
  rm_policy = parts.make_policy(config, workdir, value_head="shared", tok=tok)
  rm = train.load_params(_path(workdir, "reward_model.msgpack"), rm_policy)
  gold = parts.gold_scorer()
  P = r.prompt_len

  def score(prompts_BxP, tokens_BxT, mask_BxT):
    full = jnp.concatenate([prompts_BxP, tokens_BxT], axis=1)
    prompt_mask = prompts.mask(prompts_BxP)
    full_mask = None if prompt_mask is None else jnp.concatenate(
        [prompt_mask, jnp.ones(tokens_BxT.shape, jnp.float32)], axis=1)
    return lm.sequence_reward(jax.lax.stop_gradient(rm), rm_policy, full,
                              lm.last_index(mask_BxT, P), full_mask, pool_from(config))

  gold_task = tasks.python_task("gold", lambda p, y: gold(tok.decode(y)),
                                vocab_size=tok.vocab_size, prompt_len=P,
                                max_new_tokens=r.response_len, eos_id=eos[0], pad_id=pad,
                                sample_prompts=prompts.sample)
  return tasks.Task(TASK_NAME, tok.vocab_size, P, r.response_len, eos[0], pad, prompts.sample,
                    score, extra_metrics=lambda p, y, m: {"gold_score": gold_task.score(p, y, m)},
                    eos_ids=eos[1:], prompt_pad_id=prompts.pad_id,
                    detokenize=tok.decode)  # special tokens (a chat's end of turn) skipped


def rl_config(config, workdir):
  """The RL stage's config: the base config's fields (the rlhf block is the pipeline's), the
  policy and π_ref loaded from π_ref's checkpoint."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    del c["rlhf"]
    c.task.name, c.task.options = TASK_NAME, {}
    c.init_from = ""
    c.model.init_from = parts.pi_ref_path(config, workdir)
    c.model.value_head = "none"
  return c


def stage_rl(config, workdir, verbose=True):
  c = rl_config(config, workdir)
  summary = sweep.run(c, _path(workdir, "rl"), task=make_task(config, workdir), verbose=verbose,
                      log=print if verbose else (lambda *_: None))
  return {"RL settings (β × seeds)": f"{len(summary)} × {c.num_seeds}"}


def stage_report(config, workdir, verbose=True):
  """gold_vs_proxy.png, the tests between β, samples before and after RL and (with
  config.rlhf.eval_prompts) gold on fresh responses; π_ref, its tokenizer, the reward model and
  the final policies are loaded once for both."""
  from pg.rlhf import evaluate
  rows = [json.loads(line) for line in open(_path(workdir, "rl/results.jsonl"))]
  default_beta = float(config.hparams.kl_coef)
  out = report.gold_vs_proxy(rows, default_beta, workdir)
  betas = sorted({r.get("kl_coef", default_beta) for r in rows})
  beta_of = lambda label: label.get("kl_coef", default_beta)
  tok = parts.tokenizer(config, workdir)
  policy = parts.make_policy(config, workdir, tok=tok)
  if config.get("lora") is not None and config.lora.rank > 0:  # RL trained adapters on π_ref
    policy = with_lora(policy, config.lora.alpha)
  task = make_task(config, workdir, tok)
  ref = pretrained_tree(policy)
  policies = [({"seed": ""}, ref)] + evaluate.final_policies(workdir, base=ref)
  with open(_path(workdir, "samples.md"), "w") as f:
    f.write(evaluate.samples_before_after(config, tok, policy, task, policies, beta_of, betas))
  if config.rlhf.get("eval_prompts", 0):
    table, numbers = evaluate.gold_evaluation(config, tok, policy, task, policies, beta_of)
    with open(_path(workdir, "evaluation.md"), "w") as f:
      f.write(table)
    out.update(numbers)
  return out


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
  minimum = 256 + len(text.SPECIALS)
  if not r.get("pi_ref") and r.vocab_size <= minimum:
    raise ValueError(f"config.rlhf.vocab_size must exceed {minimum} (256 bytes and the special "
                     f"tokens {text.SPECIALS}) for the byte-level BPE, got {r.vocab_size}.")
  if r.get("reward_init", "pi_ref") not in REWARD_INITS:
    raise ValueError(f"config.rlhf.reward_init must be one of {REWARD_INITS}, got "
                     f"{r.reward_init!r}.")
  for name in ("eval_prompts", "eval_samples"):
    v = r.get(name, 0)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
      raise ValueError(f"config.rlhf.{name} must be an int >= 0, got {v!r}.")
  if r.get("eval_prompts", 0) and r.get("eval_samples", 4) < 1:
    raise ValueError("config.rlhf.eval_samples must be >= 1 when eval_prompts is set.")
  if r.get("reward_pooling", "last") not in REWARD_POOLINGS:
    raise ValueError(f"config.rlhf.reward_pooling must be one of {REWARD_POOLINGS}, got "
                     f"{r.reward_pooling!r}.")
  if r.get("reward_train", "all") not in REWARD_TRAINS:
    raise ValueError(f"config.rlhf.reward_train must be one of {REWARD_TRAINS}, got "
                     f"{r.reward_train!r}.")
  if r.get("reward_train", "all") == "head" and r.get("reward_init", "pi_ref") != "pi_ref":
    raise ValueError("config.rlhf.reward_train = 'head' trains only the scalar head, so the "
                     "trunk must be π_ref's: set config.rlhf.reward_init = 'pi_ref'.")
  if r.get("prompts", "corpus") not in parts.PROMPT_SOURCES:
    raise ValueError(f"config.rlhf.prompts must be one of {parts.PROMPT_SOURCES}, got "
                     f"{r.prompts!r}.")
  if not r.get("pi_ref") and config.model.name != "llama":
    raise ValueError(f"config.model.name must be 'llama' (π_ref is saved as a Hugging Face "
                     f"Llama checkpoint), got {config.model.name!r}.")
  if r.get("pi_ref") and not os.path.exists(r.pi_ref):
    raise FileNotFoundError(f"config.rlhf.pi_ref: no checkpoint at {r.pi_ref!r}.")
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
  r = config.rlhf
  vocab = r.vocab_size
  if r.get("pi_ref"):
    vocab = load_tokenizer(r.pi_ref).vocab_size
  stand_in = tasks.Task(TASK_NAME, vocab, r.prompt_len, r.response_len, 0, 1,
                        lambda key, n: jnp.zeros((n, r.prompt_len), jnp.int32),
                        lambda p, t, m: jnp.zeros(t.shape[:1], jnp.float32),
                        prompt_pad_id=None if r.get("prompts", "corpus") == "corpus" else 1)
  c = rl_config(config, "")
  with c.unlocked():
    c.model.init_from = r.get("pi_ref") or ""  # the pretrain stage writes the pipeline's own
  sweep.swept(c)
  sweep.groups(c, stand_in)  # every structural setting (one group when none is swept)


def check_stages(stages, workdir, config=None):
  """Raises unless every stage is known and finds the files it reads: in the workdir, or
  written by a stage before it in `stages` (π_ref: or config.rlhf.pi_ref)."""
  unknown = [s for s in stages if s not in STAGES]
  if unknown:
    raise ValueError(f"unknown stage(s) {unknown}; stages: {', '.join(STAGES)}.")
  written = set()
  if config is not None and config.get("rlhf") and config.rlhf.get("pi_ref"):
    written.add("pi_ref")
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
  check_stages(stages, workdir, config)
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
  if os.path.exists(_path(workdir, "tests.md")):
    body += "\n## Gold and proxy between β\n\n" + open(_path(workdir, "tests.md")).read()
  if os.path.exists(_path(workdir, "evaluation.md")):
    body += ("\n## Gold after RL, on fresh responses\n\n"
             + open(_path(workdir, "evaluation.md")).read())
  if os.path.exists(_path(workdir, "samples.md")):
    body += "\n## Samples before and after RL\n\n" + open(_path(workdir, "samples.md")).read()
  with open(_path(workdir, "summary.md"), "w") as f:
    f.write(body)
  return summary
