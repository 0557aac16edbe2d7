"""The policies after RL, judged: their final params restored, a few samples beside π_ref's,
and gold measured on many fresh responses: each final policy and π_ref answer the same
prompts with the same keys, and the gold scorer (and the proxy) judge every response.

The training curves hold a handful of samples per update, too few to see a change of gold;
here each policy writes `eval_prompts` × `eval_samples` responses. Per run, the change of gold
from π_ref is a paired difference over prompts (each prompt's mean over its samples, 95%
t-interval over prompts); per β, the runs' changes give a mean with a 95% t-interval across
seeds and a two-sided one-sample t-test of no change (seeds are the independent replicates).
"""

from __future__ import annotations

import jax
import numpy as np

from pg.policy import lora
from pg.rlhf import parts
from pg.rlhf.report import one_sample
from pg.run.tables import markdown_table


def responder(policy, response_len, eos, pad, samples):
  """A compiled fn(params, prompts_NxP, mask_NxP, key) -> (tokens, mask) of `samples`
  responses per prompt, rows of a prompt consecutive (compiled once for every policy)."""
  from pg.policy import sampler

  def respond(params, prompts_NxP, mask_NxP, key):
    s = sampler.sample(policy, params, prompts_NxP, key, max_new_tokens=response_len,
                       eos_id=eos[0], eos_ids=eos, pad_id=pad, group_size=samples,
                       prompt_mask_NxP=mask_NxP)
    return s.tokens_BxT, s.mask_BxT
  return jax.jit(respond)


def gold_evaluation(config, tok, policy, task, policies, betas_of) -> tuple[str, dict]:
  """Markdown and numbers: gold and proxy of π_ref and of every final policy (`policies`:
  [(label, params)], label a run's {seed, kl_coef}), and each β's change of gold from π_ref."""
  r = config.rlhf
  n, k = r.eval_prompts, r.get("eval_samples", 4)
  prompts = parts.Prompts(config, tok)
  eos, pad = parts.ids(tok)
  batch = prompts.sample(jax.random.PRNGKey(54321), n)
  mask = prompts.mask(batch)
  gold = parts.gold_scorer()
  key = jax.random.PRNGKey(99)
  respond = responder(policy, r.response_len, eos, pad, k)
  score = jax.jit(task.score)

  def judge(params):
    tokens, m = respond(params, batch, mask, key)
    texts = [parts.response_text(tok, t, mm) for t, mm in zip(np.asarray(tokens), np.asarray(m))]
    g = np.asarray([gold(t) for t in texts], np.float64).reshape(n, k).mean(axis=1)
    proxy = np.asarray(score(np.repeat(np.asarray(batch), k, axis=0), tokens, m),
                       np.float64).reshape(n, k).mean(axis=1)
    return g, proxy

  ref_gold, ref_proxy = judge(policies[0][1])
  rows = [["π_ref", "", f"{ref_gold.mean():.3f}", "", f"{ref_proxy.mean():.3f}"]]
  by_beta, numbers = {}, {"π_ref gold": float(ref_gold.mean())}
  for label, params in policies[1:]:
    g, proxy = judge(params)
    d, half, _ = one_sample(g - ref_gold)
    beta = betas_of(label)
    by_beta.setdefault(beta, []).append(d)
    rows.append([f"β = {beta:g}", str(label["seed"]), f"{g.mean():.3f}",
                 f"{d:+.3f} ± {half:.3f}", f"{proxy.mean():.3f}"])
  table = markdown_table(["policy", "seed", "gold", "gold − π_ref's (95% over prompts)",
                          "proxy"], rows)
  summary = []
  for beta, changes in sorted(by_beta.items()):
    d, half, p = one_sample(changes)
    summary.append([f"{beta:g}", str(len(changes)), f"{d:+.3f} ± {half:.3f}", f"{p:.2g}"])
    numbers[f"β = {beta:g}: gold change from π_ref"] = d
    numbers[f"β = {beta:g}: gold change p"] = p
  if len(by_beta) > 1:  # every run is RL from π_ref: did RL move gold, whatever β?
    changes = [c for cs in by_beta.values() for c in cs]
    d, half, p = one_sample(changes)
    summary.append(["all", str(len(changes)), f"{d:+.3f} ± {half:.3f}", f"{p:.2g}"])
    numbers["all runs: gold change from π_ref"] = d
    numbers["all runs: gold change p"] = p
  table += "\n\n" + markdown_table(["β", "runs", "gold − π_ref's (95% across runs)",
                                    "p (one-sample t-test)"], summary)
  note = (f"\n\n{n} prompts × {k} responses per policy, the same prompts and keys for every "
          f"policy; gold: VADER compound; a run's change is paired over prompts.\n")
  return table + note, numbers


def final_policies(workdir, base=None):
  """The RL runs' final params, restored from their batch checkpoints: [(label, params)]; runs
  trained with LoRA saved adapters only, which go on `base` (π_ref's params)."""
  import json
  import os

  import orbax.checkpoint as ocp
  out = []
  root = parts.path(workdir, "rl/groups")
  for group in sorted(os.listdir(root)):
    for batch in sorted(os.listdir(os.path.join(root, group))):
      d = os.path.join(root, group, batch)
      labels = json.load(open(os.path.join(d, "config.json")))["runs"]
      with ocp.CheckpointManager(os.path.abspath(os.path.join(d, "checkpoints"))) as manager:
        state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore())
      for i, label in enumerate(labels):
        params = jax.tree_util.tree_map(lambda x: x[i], state["params"])
        if lora.LORA in params:
          if base is None:
            raise ValueError(f"{d}: the runs saved LoRA adapters; pass the base they sit on.")
          params = lora.combine(base, params)
        out.append((label, params))
  return out


def samples_before_after(config, tok, policy, task, policies, betas_of, betas, n=4) -> str:
  """Markdown: the same prompts answered by π_ref (`policies[0]`) and by seed 0 of each β in
  `betas` after RL, with gold and proxy scores."""
  from pg.policy import sampler
  r = config.rlhf
  prompts = parts.Prompts(config, tok)
  eos, pad = parts.ids(tok)
  batch = prompts.sample(jax.random.PRNGKey(12345), n)
  gold = parts.gold_scorer()
  shown = [("π_ref", policies[0][1])]
  shown += [(f"after RL, β = {betas_of(label):g}", p) for label, p in policies[1:]
            if label["seed"] == 0 and betas_of(label) in betas]
  rows = []
  for name, params in shown:
    s = sampler.sample(policy, params, batch, jax.random.PRNGKey(7),
                       max_new_tokens=r.response_len, eos_id=eos[0], eos_ids=eos, pad_id=pad,
                       prompt_mask_NxP=prompts.mask(batch))
    proxy = np.asarray(task.score(batch, s.tokens_BxT, s.mask_BxT))
    for i in range(n):
      response = parts.response_text(tok, s.tokens_BxT[i], s.mask_BxT[i])
      prompt = task.decode_prompt(batch[i]).replace("\n", " ").replace("|", "/")
      rows.append([name, prompt, response.replace("\n", " ").replace("|", "/"),
                   f"{gold(response):.2f}", f"{proxy[i]:.2f}"])
  return markdown_table(["policy", "prompt", "response", "gold", "proxy"], rows) + "\n"
