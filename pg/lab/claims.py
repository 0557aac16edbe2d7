"""The source text's five claims about the score-function estimator, measured.

Each function returns numbers with standard errors; `pg.lab.findings` turns them into
sentences and `pg.lab.report` into tables and the report. Every registered advantage estimator
(`pg.ADVANTAGE_ESTIMATORS`, a fork's included) that runs on the lab's problems is measured.

1. "The estimator is unbiased" and 2. "a baseline changes variance but not the expectation"
   (`bias_and_variance`): Stats of N group estimates at several N, and at the largest N with
   every score shifted by +5 on the same samples.
3. "The same scalar multiplies every token" (`credit_assignment`): where the gradient variance
   sits when only one token matters, with exact, noisy and learned critics.
4. "λ trades bias against variance" (`lambda_tradeoff`): GAE's advantages and gradients across
   λ with critics of controlled quality.
5. "Too large a step collapses the policy" (`collapse`): collapse counts across seeds of
   REINFORCE on reused samples against PPO's clip, at increasing learning rates (a `pg.run`
   sweep).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import NamedTuple, Optional

import jax
import numpy as np

import pg
from pg.lab import problems
from pg.lab import offpolicy
from pg.lab.estimates import (AdvantageError, constant_over_tokens, estimator_names,
                              gae_advantage_error, group_estimates, needs_values)
from pg.lab.problems import Problem
from pg.lab.statistics import (CreditStats, Stats, credit_statistics, statistics_of,
                               variance_ratio)
from pg.run import configs, sweep

GROUP_SIZE = 4                     # G, samples per gradient estimate
OFFSET = 5.0                       # claim 2: every score shifted by this
REFERENCE = "none"                 # the estimator the variance reductions are against
NEEDLE_FIRST_IRRELEVANT = 2        # claim 3: θ[t ≥ 2] cannot matter
CRITIC_NOISES = (0.1, 0.3)         # σ of the noisy critics
CLAIM_3_CRITIC_SIZES = (16, 256, 4096)  # M of the learned critics of claim 3
CLAIM_4_CRITIC_SIZE = 256          # M of the learned critic of claim 4
LAMBDAS = (0.0, 0.5, 0.9, 0.95, 1.0)


def measurable_estimators(problem: Problem, key):
  """The registry's estimators, and {name: error} for those that fail on this problem."""
  ok, failed = [], {}
  for name in estimator_names():
    try:
      group_estimates(problem, name, 8, GROUP_SIZE, key).block_until_ready()
      ok.append(name)
    except Exception as e:  # noqa: BLE001 - a fork's estimator may not fit the lab
      failed[name] = f"{type(e).__name__}: {e}"
  return tuple(ok), failed


# Claims 1 and 2.

class BiasAndVariance(NamedTuple):
  estimators: tuple
  sizes: tuple          # the N measured, ascending
  by_n: dict            # name -> {N: Stats}, the first N of max(sizes) estimates
  shifted: dict         # name -> Stats at max(sizes), every score + OFFSET, the same samples
  reference: str        # the estimator the variance ratios are against
  ratio: dict           # name -> tr Σ_reference / tr Σ at max(sizes)
  ratio_shifted: dict   # the same with every score + OFFSET
  growth: dict          # name -> tr Σ(+OFFSET) / tr Σ on the same samples

  @property
  def top(self) -> dict:
    """name -> Stats at the largest N."""
    return {n: self.by_n[n][self.sizes[-1]] for n in self.estimators}

  @property
  def unbiased(self) -> list:
    return [n for n, s in self.top.items() if not s.biased]

  @property
  def biased(self) -> list:
    return [n for n, s in self.top.items() if s.biased]


def bias_and_variance(problem: Problem, estimators, sizes, key) -> BiasAndVariance:
  """Per estimator (key folded with its position): max(sizes) group estimates, and the same
  samples with every score + OFFSET (a paired comparison); `compare_estimators` of them."""
  g, g_shifted = {}, {}
  for i, name in enumerate(estimators):
    k = jax.random.fold_in(key, i)
    g[name] = group_estimates(problem, name, max(sizes), GROUP_SIZE, k)
    g_shifted[name] = group_estimates(problem, name, max(sizes), GROUP_SIZE, k, offset=OFFSET)
  return compare_estimators(g, g_shifted, problems.exact_gradient(problem), sizes)


def compare_estimators(g_by_name, shifted_by_name, exact_D, sizes) -> BiasAndVariance:
  """Stats of each estimator's estimates `[max(sizes), D]` at every N in `sizes` (nested
  prefixes) and of its estimates with the scores shifted; variance ratios against REFERENCE
  (else the first estimator)."""
  sizes = tuple(sorted(sizes))
  estimators = tuple(g_by_name)
  by_n = {name: {n: statistics_of(np.asarray(g)[:n], exact_D) for n in sizes}
          for name, g in g_by_name.items()}
  shifted = {name: statistics_of(g, exact_D) for name, g in shifted_by_name.items()}
  ref = REFERENCE if REFERENCE in estimators else estimators[0]
  top = {n: by_n[n][sizes[-1]] for n in estimators}
  return BiasAndVariance(
      estimators, sizes, by_n, shifted, ref,
      {n: variance_ratio(top[ref], top[n]) for n in estimators},
      {n: variance_ratio(shifted[ref], shifted[n]) for n in estimators},
      {n: variance_ratio(shifted[n], top[n]) for n in estimators})


# Claim 3.

class CreditCase(NamedTuple):
  estimator: str
  critic: Optional[str]           # None (no critic), "exact", "noisy, σ = …", "learned, M = …"
  sequence_level: bool            # the same advantage at every token
  critic_error: Optional[float]   # `problems.critic_error`, for the rows with a critic
  stats: CreditStats


class Credit(NamedTuple):
  problem: Problem                # the needle problem
  norms_T: np.ndarray             # ‖∇J‖ restricted to θ[t], by step
  critic_user: Optional[str]      # the estimator given the noisy and learned critics
  cases: tuple                    # CreditCase


def credit_assignment(num_groups: int, key) -> Credit:
  """On `needle_problem` (only y_1 matters): where each estimator's gradient variance sits,
  every estimator with no critic or the exact one, then `gae` (else the first estimator needing
  a critic) with the noisy critics of CRITIC_NOISES and the learned ones of
  CLAIM_3_CRITIC_SIZES."""
  p = problems.needle_problem()
  exact_TxP = np.asarray(problems.exact_gradient(p)).reshape(p.length, -1)
  estimators, _ = measurable_estimators(p, jax.random.fold_in(key, 999))
  critic_user = "gae" if "gae" in estimators else next(
      (n for n in estimators if needs_values(n)), None)
  cases = [(n, "exact" if needs_values(n) else None, None) for n in estimators]
  if critic_user:
    cases += [(critic_user, f"noisy, σ = {s:g}", problems.noisy_values(p, s))
              for s in CRITIC_NOISES]
    cases += [(critic_user, f"learned, M = {m:,}",
               problems.learned_values(p, m, jax.random.fold_in(key, 10_000 + m)))
              for m in CLAIM_3_CRITIC_SIZES]
  out = []
  for i, (name, critic, values) in enumerate(cases):
    k = jax.random.fold_in(key, i)
    g_NxD = group_estimates(p, name, num_groups, GROUP_SIZE, k, values_NxT=values)
    err = (problems.critic_error(p, values if values is not None else problems.exact_values(p))
           if critic else None)
    out.append(CreditCase(name, critic,
                          constant_over_tokens(p, name, k, GROUP_SIZE, values_NxT=values), err,
                          credit_statistics(g_NxD, p.length, NEEDLE_FIRST_IRRELEVANT)))
  return Credit(p, np.linalg.norm(exact_TxP, axis=1), critic_user, tuple(out))


# Claim 4.

class LambdaSweep(NamedTuple):
  critic: str
  critic_error: float
  advantage: tuple      # AdvantageError per λ of LAMBDAS
  gradient: tuple       # Stats of `gae`'s group estimates per λ


def lambda_tradeoff(problem: Problem, num_groups: int, num_samples: int, key) -> tuple:
  """GAE(γ = 1, λ) for every λ in LAMBDAS with four critics (exact, noisy at CRITIC_NOISES,
  learned from CLAIM_4_CRITIC_SIZE samples): the advantages' error against A* over
  `num_samples` sequences and the Stats of `num_groups` group estimates; a LambdaSweep each."""
  exact_D = problems.exact_gradient(problem)
  critics = [("exact", problems.exact_values(problem))]
  critics += [(f"noisy, σ = {s:g}", problems.noisy_values(problem, s)) for s in CRITIC_NOISES]
  critics += [(f"learned, M = {CLAIM_4_CRITIC_SIZE}",
               problems.learned_values(problem, CLAIM_4_CRITIC_SIZE,
                                       jax.random.fold_in(key, 10_000)))]
  out = []
  for c, (label, values) in enumerate(critics):
    adv: list[AdvantageError] = []
    grad: list[Stats] = []
    for j, lam in enumerate(LAMBDAS):
      k = jax.random.fold_in(key, 100 * c + j)
      adv.append(gae_advantage_error(problem, lam, 0.0, num_samples, jax.random.fold_in(k, 0),
                                     values_NxT=values))
      g_NxD = group_estimates(problem, "gae", num_groups, GROUP_SIZE, jax.random.fold_in(k, 1),
                              hp=pg.make_hparams(lam=lam), values_NxT=values)
      grad.append(statistics_of(g_NxD, exact_D))
    out.append(LambdaSweep(label, problems.critic_error(problem, values), tuple(adv),
                           tuple(grad)))
  return tuple(out)


# Claim 5.

def collapse_config(seeds: int):
  """`target_token` (V = 16, 8 tokens), a 1-layer transformer, RLOO, each batch reused for 4
  epochs × 2 minibatches; swept: the policy loss (REINFORCE, PPO) × five learning rates."""
  c = configs.base_config()
  c.task.name = "target_token"
  c.task.options = {"vocab_size": 16, "prompt_len": 4, "length": 8, "target": 3}
  c.model.update(num_layers=1, d_model=32, num_heads=2)
  c.num_seeds, c.num_prompts, c.group_size = seeds, 8, 4
  c.advantage = "rloo"
  c.ppo_epochs, c.num_minibatches = 4, 2
  c.updates_per_chunk, c.num_chunks, c.checkpoint_every = 10, 6, 6
  c.sweep.policy_loss = ("reinforce", "ppo")
  c.sweep.learning_rate = (3e-3, 3e-2, 1e-1, 3e-1, 1.0)
  return c


def config_digest(config) -> str:
  """12 hex digits of the SHA-1 of the config's sorted JSON."""
  return hashlib.sha1(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()[:12]


class Cell(NamedTuple):
  collapsed: int          # seeds whose final score is below their first
  seeds: int              # S
  final_S: np.ndarray     # mean score over the last 10% of updates, per seed


class Collapse(NamedTuple):
  config: object          # `collapse_config`'s
  cells: dict             # (policy loss, learning rate) -> Cell, sorted
  workdir: Optional[str]  # where the sweep ran, None for a removed temporary folder


def collapse(config, sweep_workdir: Optional[str] = None) -> Collapse:
  """Runs `config`'s sweep (one `pg.run.sweep`, one compile per policy loss) in a fresh
  temporary folder, or in `sweep_workdir`/<config_digest>, where a rerun reuses the runs of an
  identical config only; a Cell per (loss, learning rate)."""
  if sweep_workdir:
    workdir = os.path.join(sweep_workdir, config_digest(config))
    return Collapse(config, _cells(config, workdir), workdir)
  with tempfile.TemporaryDirectory(prefix="estimator_lab_claim5_") as tmp:
    return Collapse(config, _cells(config, tmp), None)


def _cells(config, workdir) -> dict:
  """The sweep run in `workdir`; per setting, the seeds whose final score (the mean over the
  last 10% of updates) is below their first score."""
  summary = sweep.run(config, workdir, verbose=False, log=lambda *_: None)
  cells = {}
  for s in summary:
    x_SxU = s.curves_SxU
    start_S = x_SxU[:, 0]
    final_S = x_SxU[:, -max(1, x_SxU.shape[1] // 10):].mean(axis=1)
    cells[(s.values["policy_loss"], s.values["learning_rate"])] = Cell(
        int(np.sum(final_S < start_S)), x_SxU.shape[0], final_S)
  return dict(sorted(cells.items()))


# All five.

class Measurements(NamedTuple):
  seed: int
  problem: Problem        # of claims 1, 2 and 4
  num_groups: int         # group estimates per row of claims 3 and 4
  failed: dict            # estimator -> error, for those the lab cannot measure
  bias: BiasAndVariance   # claims 1 and 2
  credit: Credit          # claim 3
  lambdas: tuple          # claim 4, LambdaSweep per critic
  collapse: Collapse      # claim 5
  staleness: offpolicy.Staleness  # stale samples and rollout correction, exact
  losses: tuple           # offpolicy.LossCheck per registered policy loss


def measure(seed: int, sizes, seeds: int, sweep_workdir: Optional[str] = None) -> Measurements:
  """Claims 1–4 from PRNG seed `seed` (claims 1 and 2 at each N of `sizes`, claims 3 and 4 at
  max(sizes) / 4 groups and max(sizes) sequences), claim 5 with `seeds` training seeds."""
  key = jax.random.PRNGKey(seed)
  problem = problems.default_problem()
  num_groups = max(sizes) // 4
  estimators, failed = measurable_estimators(problem, jax.random.fold_in(key, 99))
  return Measurements(
      seed, problem, num_groups, failed,
      bias_and_variance(problem, estimators, sizes, jax.random.fold_in(key, 1)),
      credit_assignment(num_groups, jax.random.fold_in(key, 3)),
      lambda_tradeoff(problem, num_groups, max(sizes), jax.random.fold_in(key, 4)),
      collapse(collapse_config(seeds), sweep_workdir),
      offpolicy.staleness(problem), offpolicy.on_policy_losses(problem))

