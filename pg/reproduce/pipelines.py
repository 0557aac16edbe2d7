"""The two runners with stages of their own: the RLHF pipeline and the estimator lab.

`run_rlhf` runs every stage of `pg.rlhf` with the group's seeds per β and keeps, per β, the
gold score, the proxy (the reward model's score) and the KL to π_ref over the first and last
10% of updates. `run_lab` measures the lab's five claims (`pg.lab.claims.measure`), writes its
report into the workdir and keeps the README's main table and its short account of claims 3–5,
sentences built from the measured numbers (`lab_brief`).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

import pg
from pg import rlhf
from pg.lab import claims
from pg.lab import report as lab_report
from pg.lab.findings import Z_SIGNIFICANT, fisher_pvalue, safe_rate, trend
from pg.reproduce import stats
from pg.reproduce.groups import command, config_of

RLHF_METRICS = ("gold_score", "mean_score", "kl_to_ref")
SMOKE_RLHF = {"vocab_size": 300, "prompt_len": 4, "response_len": 6, "pretrain_steps": 10,
              "pretrain_batch": 16, "num_pairs": 64, "reward_steps": 10, "reward_batch": 16}
SMOKE_LAB_SIZES = (40, 160)  # the smallest N: 20 batches of 2; N / 4 = 40 for claims 3 and 4


def run_rlhf(group, workdir, smoke):
  """Every stage of `experiments/rlhf.py` on the group's config, `group.seeds` seeds per β."""
  start = time.time()
  config = config_of(group, smoke)
  if smoke:
    with config.unlocked():
      config.rlhf.update(SMOKE_RLHF)
      config.model.update(num_layers=1, d_model=32, num_heads=2, num_kv_heads=1, mlp_dim=64)
  summary = rlhf.run(config, workdir, verbose=True)
  rows = [json.loads(line) for line in open(os.path.join(workdir, "rl", "results.jsonl"))]
  betas = []
  for beta in sorted({r.get("kl_coef", float(config.hparams.kl_coef)) for r in rows}):
    mine = [r for r in rows if r.get("kl_coef", float(config.hparams.kl_coef)) == beta]
    seeds = sorted({r["seed"] for r in mine})
    U = 1 + max(r["update"] for r in mine)
    curves = {k: np.full((len(seeds), U), np.nan) for k in RLHF_METRICS}
    for r in mine:
      for k in RLHF_METRICS:
        curves[k][seeds.index(r["seed"]), r["update"]] = r[k]
    betas.append({"kl_coef": beta, "metrics": {k: stats.windows(v) for k, v in curves.items()}})
  samples = os.path.join(workdir, "samples.md")
  return {"command": command("experiments/rlhf.py", group), "seeds": config.num_seeds,
          "updates": config.updates_per_chunk * config.num_chunks,
          "wall_s": time.time() - start,
          "stages": {s: summary[s] for s in ("pretrain", "preferences", "reward")},
          "betas": betas, "samples": open(samples).read() if os.path.exists(samples) else ""}


def run_lab(group, workdir, smoke):
  """`experiments/estimator_lab.py`: its report and figure in `workdir` (which the caller
  publishes to reports/estimator_lab/)."""
  start = time.time()
  sizes = SMOKE_LAB_SIZES if smoke else lab_report.DEFAULT_SIZES
  seeds = 2 if smoke else group.seeds
  m = claims.measure(0, sizes, seeds)
  os.makedirs(workdir, exist_ok=True)
  lab_report.plot_bias(m.bias, os.path.join(workdir, lab_report.FIGURE))
  wall = time.time() - start
  with open(os.path.join(workdir, lab_report.REPORT), "w", encoding="utf-8") as f:
    f.write(lab_report.render(m, wall))
  return {"command": "python experiments/estimator_lab.py --update-report", "seeds": seeds,
          "estimates": max(sizes), "wall_s": wall,
          "main_table": lab_report.main_table(m.bias), "brief": lab_brief(m)}


# The lab's short account (README), from the measurements.

def _moves(direction):
  return {"rises": "rises", "falls": "falls"}.get(direction, "does not move beyond "
                                                             f"{Z_SIGNIFICANT:g} standard errors,")


def _credit(credit) -> str:
  cases = credit.cases
  seq = [c.stats.share.value for c in cases if c.sequence_level and c.critic in (None, "exact")]
  exact = [c for c in cases if c.estimator == credit.critic_user and c.critic == "exact"]
  learned = [c for c in cases if c.critic and c.critic.startswith("learned")]
  out = (f"- **Credit assignment.** The score depends on one token of {credit.problem.length}. "
         f"The estimators that give every token the same advantage put "
         f"{100 * min(seq):.0f}–{100 * max(seq):.0f}% of their gradient variance on the "
         f"parameters of the tokens after it, where ∇J is 0.")
  if exact:
    out += (f" `{credit.critic_user}` with the exact critic puts "
            f"{100 * exact[0].stats.share.value:.0f}% there")
    if learned:
      sizes = [c.critic.split("= ")[1] for c in learned]
      shares = [f"{100 * c.stats.share.value:.1f}%" for c in learned]
      out += (f"; with a critic learned by least squares from M = {_and(sizes)} Monte-Carlo "
              f"returns, {_and(shares)}")
    out += "."
  return out


def _and(xs):
  return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]


def _lams(xs):
  return "{" + ", ".join(f"{x:g}" for x in xs) + "}"


def _lambda(sweeps) -> str:
  noisy = next(sw for sw in reversed(sweeps) if sw.critic.startswith("noisy"))
  learned = next(sw for sw in sweeps if sw.critic.startswith("learned"))
  bias2 = [a.bias2 for a in noisy.advantage]
  var = [a.variance for a in noisy.advantage]
  lo, hi = claims.LAMBDAS[0], claims.LAMBDAS[-1]
  biased = [lam for lam, s in zip(claims.LAMBDAS, noisy.gradient) if s.biased]
  unbiased = [lam for lam, s in zip(claims.LAMBDAS, noisy.gradient) if not s.biased]
  default = float(pg.make_hparams()["lam"])
  at = min(range(len(claims.LAMBDAS)), key=lambda i: abs(claims.LAMBDAS[i] - default))
  s = learned.gradient[at]
  grad = ("the policy gradient is " + " and ".join(
      [f"biased at λ ∈ {_lams(biased)}"] * bool(biased) +
      [f"unbiased at λ ∈ {_lams(unbiased)}"] * bool(unbiased)))
  return (f"- **λ.** With a noisy critic ({noisy.critic.split(', ')[1]}) the advantage's bias² "
          f"{_moves(trend(bias2, claims.LAMBDAS, '')[0])} from {bias2[0].value:.3f} at λ = "
          f"{lo:g} to {bias2[-1].value:.3f} at λ = {hi:g} while its variance "
          f"{_moves(trend(var, claims.LAMBDAS, '')[0])} from {var[0].value:.3f} to "
          f"{var[-1].value:.3f}; {grad} (z-test). With a critic learned from "
          f"{learned.critic.split('= ')[1]} samples, the gradient at the default "
          f"λ = {claims.LAMBDAS[at]:g} is {'biased' if s.biased else 'unbiased'} "
          f"(max |z| = {s.max_abs_z:.1f} against {s.z_threshold:.2f}).")


def _collapse(collapse) -> str:
  cells, c = collapse.cells, collapse.config
  rates = sorted({k[1] for k in cells})
  losses = sorted({k[0] for k in cells})
  seeds = c.num_seeds
  name = {"ppo": "PPO", "reinforce": "REINFORCE"}
  keeps = [f"{name.get(loss, loss)} " + (f"keeps every seed up to a learning rate of "
                                         f"{safe_rate(cells, loss, rates):g}"
                                         if safe_rate(cells, loss, rates) else
                                         "loses seeds already at the smallest rate")
           for loss in losses]
  top = rates[-1]
  lost = [f"{name.get(loss, loss)} {cells[(loss, top)].collapsed}" for loss in losses]
  out = (f"- **Large steps.** Samples reused for {c.ppo_epochs} epochs × {c.num_minibatches} "
         f"minibatches, {seeds} seeds per rate. {'; '.join(keeps)}; at {top:g}, "
         f"{' and '.join(lost)} of {seeds} seeds collapse.")
  if len(losses) == 2 and "ppo" in losses:
    other = next(loss for loss in losses if loss != "ppo")
    fewer = []
    for lr in rates:
      a, b = cells[("ppo", lr)], cells[(other, lr)]
      if a.collapsed < b.collapsed and fisher_pvalue(a, b) < 0.05:
        fewer.append(f"{lr:g}")
    out += (f" PPO collapses in significantly fewer seeds at {_and(fewer)}" if fewer else
            " At no rate does PPO collapse in significantly fewer seeds") + (
        " (two-sided Fisher exact tests at the 5% level).")
  return out


def lab_brief(m) -> str:
  """Bullets on claims 3, 4 and 5, stale samples and the losses on-policy, every number and
  verdict from `m`."""
  from pg.lab import offpolicy
  return "\n".join([_credit(m.credit), _lambda(m.lambdas), _collapse(m.collapse),
                    "- **Stale samples.** " + offpolicy.staleness_text(m.staleness),
                    "- **Losses on-policy.** " + offpolicy.losses_text(m.losses)])
