"""The estimator lab: the source text's claims about the score-function estimator, measured.

    python experiments/estimator_lab.py [--workdir reports/estimator_lab] [--groups 1000 4000 16000 64000]

About 2 minutes on a 2-core CPU. Writes report.md (tables with standard errors) and a figure
into the workdir (see pg/lab.py for the problems and the statistics):

1. "The estimator is unbiased": per registered advantage estimator, relative bias, the noise
   floor an unbiased estimator would show, the scale along ∇J and a Bonferroni z-test, at
   several sample sizes.
2. "A baseline changes variance but not the expectation": variance (tr Σ) and SNR of each
   estimator at an equal budget of G samples per estimate, the reduction factor against plain
   REINFORCE, and the same with every score shifted by +5.
3. "The same scalar multiplies every token": gradient variance on the parameters of tokens that
   cannot matter, sequence-level estimators against per-token ones with a critic.
4. "λ trades bias against variance": GAE advantages and gradients across λ with a critic of
   controlled quality, against the true advantages.
5. "Too large a step collapses the policy": final score and collapse rate across seeds for
   REINFORCE on reused samples against PPO's clipped objective, at increasing learning rates.
"""

import argparse
import os
import time

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import pg  # noqa: E402
from pg import configs, lab, sweep  # noqa: E402

ESTIMATORS = ("none", "moving_average", "group_mean", "rloo", "grpo", "grpo_population",
              "reinforce_pp", "value", "gae")
GROUP_SIZE = 4
OFFSET = 5.0


def claim_1(problem, exact, sizes, key):
  rows, curves = [], {}
  for i, name in enumerate(ESTIMATORS):
    g_max = lab.group_estimates(problem, name, max(sizes), GROUP_SIZE, jax.random.fold_in(key, i))
    by_n = [lab.statistics_of(g_max[:n], exact) for n in sizes]
    curves[name] = by_n
    s = by_n[-1]
    cells = [f"{b.relative_bias:.3f} ± {b.relative_bias_se:.3f} ({b.noise_floor:.3f})"
             for b in by_n]
    rows.append([name] + cells + [f"{s.scale:.3f} ± {s.scale_se:.3f}", f"{s.cosine:.4f}",
                                  f"{s.max_abs_z:.1f}", "**biased**" if s.biased else "unbiased"])
  header = (["estimator"] + [f"rel. bias ± se (floor), N = {n:,}" for n in sizes] +
            [f"scale along ∇J, N = {max(sizes):,}", "cosine", "max abs z", "verdict"])
  return table(header, rows), curves


def claim_2(problem, exact, n, key):
  rows = []
  results = {}
  for offset in (0.0, OFFSET):
    for i, name in enumerate(ESTIMATORS):
      g = lab.group_estimates(problem, name, n, GROUP_SIZE, jax.random.fold_in(key, i),
                              offset=offset)
      results[(name, offset)] = lab.statistics_of(g, exact)
  base = results[("none", 0.0)]
  base_off = results[("none", OFFSET)]
  for name in ESTIMATORS:
    s, s_off = results[(name, 0.0)], results[(name, OFFSET)]
    ratio = base.variance / s.variance
    ratio_se = ratio * np.hypot(base.variance_se / base.variance, s.variance_se / s.variance)
    rows.append([name, f"{s.variance:.4f} ± {s.variance_se:.4f}", f"{s.snr:.4f}",
                 f"{s.own_snr:.4f}",
                 f"{ratio:.2f} ± {ratio_se:.2f}", f"{s_off.variance:.4f} ± {s_off.variance_se:.4f}",
                 f"{base_off.variance / s_off.variance:.1f}"])
  header = ["estimator", "tr Σ per estimate", "SNR ‖∇J‖²/tr Σ", "‖mean ĝ‖²/tr Σ",
            "variance reduction vs none",
            f"tr Σ, scores + {OFFSET:g}", f"reduction vs none, scores + {OFFSET:g}"]
  return table(header, rows)


def claim_3(n, key):
  p = lab.needle_problem()
  exact = np.asarray(lab.exact_gradient(p)).reshape(p.length, -1)
  rows = []
  cases = [("none", 0.0), ("rloo", 0.0), ("value", 0.0), ("gae", 0.0), ("gae", 0.1),
           ("gae", 0.3)]
  for i, (name, noise) in enumerate(cases):
    g = lab.group_estimates(p, name, n, GROUP_SIZE, jax.random.fold_in(key, i),
                            value_noise=noise)
    v = lab.variance_by_step(g, p)
    se = lambda x: x * np.sqrt(2.0 / (n - 1))  # of a sum of variances, roughly (normal data)
    irrelevant, relevant = v[2:].sum(), v[:2].sum()
    critic = "" if name in ("none", "rloo") else (" (exact V)" if noise == 0 else
                                                   f" (V + {noise:g}·ε)")
    rows.append([name + critic, f"{relevant:.4f}", f"{irrelevant:.4f} ± {se(irrelevant):.4f}",
                 f"{irrelevant / (relevant + irrelevant):.0%}"])
  header = ["estimator", "variance on θ[t ≤ 1] (relevant)", "variance on θ[t ≥ 2] (irrelevant)",
            "share on irrelevant"]
  norms = ", ".join(f"{x:.3f}" for x in np.linalg.norm(exact, axis=1))
  return table(header, rows), norms


def claim_4(n_groups, n_samples, key):
  p = lab.default_problem()
  exact = lab.exact_gradient(p)
  rows = []
  lams = (0.0, 0.5, 0.9, 0.95, 1.0)
  for noise in (0.0, 0.1, 0.3):
    for j, lam in enumerate(lams):
      bias2, var = lab.gae_advantage_error(p, lam, noise, n_samples, jax.random.fold_in(key, j))
      g = lab.group_estimates(p, "gae", n_groups, GROUP_SIZE, jax.random.fold_in(key, 100 + j),
                              hp=pg.make_hparams(lam=lam), value_noise=noise)
      s = lab.statistics_of(g, exact)
      rows.append([f"{noise:g}", f"{lam:g}", f"{bias2:.4f}", f"{var:.4f}",
                   f"{s.relative_bias:.3f} ({s.noise_floor:.3f})", f"{s.variance:.4f}",
                   "**biased**" if s.biased else "unbiased"])
  header = ["critic noise σ", "λ", "advantage bias²", "advantage variance",
            "gradient rel. bias (floor)", "gradient tr Σ", "gradient verdict"]
  return table(header, rows)


def claim_5(workdir, seeds, verbose):
  """Vanilla PG (REINFORCE loss, samples reused for 4 epochs × 2 minibatches, no ratio) against
  PPO's clipped objective at the same learning rates: one pg.sweep, two compiles."""
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
  out = workdir
  summary = sweep.run(c, out, verbose=verbose, log=(print if verbose else lambda *_: None))
  rows = []
  for s in sorted(summary, key=lambda s: (s.values["policy_loss"], s.values["learning_rate"])):
    x = s.curves_SxU
    start, final = x[:, 0], x[:, -max(1, x.shape[1] // 10):].mean(axis=1)
    collapsed = int(np.sum(final < start))
    rows.append([s.values["policy_loss"], f"{s.values['learning_rate']:g}",
                 f"{s.final[0]:.3f} ± {s.final[1]:.3f}", f"{collapsed}/{x.shape[0]}"])
  header = ["loss", "learning rate", "final score (95% CI over seeds)",
            "collapsed (final < its start)"]
  return table(header, rows)


def table(header, rows):
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(lines)


def plot_bias(curves, sizes, path):
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, (name, by_n) in enumerate(curves.items()):
    ax.plot(sizes, [s.relative_bias for s in by_n], "o-", color=f"C{i}", label=name)
    ax.plot(sizes, [s.noise_floor for s in by_n], ":", color=f"C{i}", lw=1)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("groups of 4 samples, N")
  ax.set_ylabel("‖mean ĝ − ∇J‖ / ‖∇J‖")
  ax.set_title("relative bias (solid) and the noise floor of an unbiased estimator (dotted)")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=os.path.join("reports", "estimator_lab"))
  parser.add_argument("--groups", type=int, nargs="+", default=[1000, 4000, 16000, 64000])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--seeds", type=int, default=16, help="training seeds per cell (claim 5)")
  parser.add_argument("--sweep-workdir", default=os.path.join("runs", "estimator_lab_claim5"),
                      help="claim 5's sweep (checkpoints, metrics; a rerun reuses its runs)")
  args = parser.parse_args()
  os.makedirs(args.workdir, exist_ok=True)
  start = time.time()
  problem = lab.default_problem()
  exact = lab.exact_gradient(problem)
  key = jax.random.PRNGKey(args.seed)
  sizes = sorted(args.groups)
  t1, curves = claim_1(problem, exact, sizes, jax.random.fold_in(key, 1))
  figure = plot_bias(curves, sizes, os.path.join(args.workdir, "bias_vs_samples.png"))
  t2 = claim_2(problem, exact, max(sizes), jax.random.fold_in(key, 2))
  t3, norms3 = claim_3(max(sizes) // 4, jax.random.fold_in(key, 3))
  t4 = claim_4(max(sizes) // 4, max(sizes), jax.random.fold_in(key, 4))
  t5 = claim_5(args.sweep_workdir, args.seeds, verbose=False)
  D = int(np.sum(np.abs(np.asarray(exact)) > 0))
  report = f"""# The estimator lab

Problem: a tabular autoregressive policy over V = {problem.vocab_size} tokens and T =
{problem.length} steps ({problem.vocab_size ** problem.length} sequences, listed), θ drawn at
scale 0.7 (seed 0); r(y) = share of 2s + 1 when the first and last tokens match. J, ∇J and
V(y_<t) are exact. One estimate = one group of G = {GROUP_SIZE} samples through the registered
estimator and the token-level REINFORCE surrogate; `value` and `gae` get the exact V. Default
hyperparameters (γ = 1, λ = 0.95, ε = 1e-6). ∇J has {D} nonzero components. Seed {args.seed}.

## Claim 1: "the estimator is unbiased"

Relative bias ‖mean ĝ − ∇J‖/‖∇J‖ ± its standard error (delta method) at each N with, in
brackets, the noise floor √(tr Σ/N)/‖∇J‖ that an unbiased estimator's bias sits at; the scale ⟨mean ĝ, ∇J⟩/‖∇J‖² ± its standard error (1
if unbiased); the largest |z| of mean − exact over the components, against the two-sided
Bonferroni threshold at α = 1e-3 ({curves['none'][-1].z_threshold:.2f}).

{t1}

Unbiased estimators track the noise floor down as 1/√N; biased ones level off at their bias.
The group mean that includes the sample itself scales ∇J by (G − 1)/G = {(GROUP_SIZE - 1) / GROUP_SIZE:.2f}.
GRPO's division by the group's std and REINFORCE++'s batch whitening rescale the gradient (and,
for GRPO, turn it slightly: cosine below 1), so they are biased estimators of ∇J.

![bias against sample size](bias_vs_samples.png)

## Claim 2: "a baseline changes variance but not the expectation"

N = {max(sizes):,} estimates of G = {GROUP_SIZE} samples each (an equal budget for every row);
tr Σ ± its standard error, SNR = ‖∇J‖²/tr Σ, and the reduction factor tr Σ_none / tr Σ
(± from both standard errors). For the biased estimators, which rescale the gradient, compare
‖mean ĝ‖²/tr Σ (the SNR of what they do estimate) rather than tr Σ. The last two columns shift
every score by +{OFFSET:g}, which leaves ∇J unchanged: without a baseline the variance grows
with the shift; with one it does not.

{t2}

## Claim 3: "the same scalar multiplies every token" (credit assignment)

Problem: V = 3, T = 6 (729 sequences), r(y) = 1[y_1 = 2]: only the token at t = 1 matters, so
the exact gradient on θ[t ≥ 2] is 0 (‖∇J‖ by step: {norms3}). Sum of the gradient components'
variances per estimate (G = {GROUP_SIZE}, N = {max(sizes) // 4:,}; ± about √(2/N) relative). A
sequence-level advantage multiplies every token's score by the same number, so the tokens after
the decisive one collect variance and no signal; a per-token advantage from a critic does not.

{t3}

## Claim 4: "λ trades bias against variance"

GAE(γ = 1, λ) with a critic of controlled quality, V̂ = V + σ·ε(state), ε ~ N(0, 1) fixed per
prefix, on the problem of claim 1. Left: the advantage against the true A*(s, a) = V(s') − V(s),
bias² and variance per (state, action) averaged over visits ({max(sizes):,} sampled
sequences). Right: the resulting policy gradient, as in claim 1 (N = {max(sizes) // 4:,} groups).
λ = 0 trusts V̂ (no variance; all of V̂'s error becomes bias), λ = 1 trusts returns (V̂ only
shifts the advantage by a function of the state, which biases the advantage but not the
gradient, and the variance is largest). With the exact critic every λ is unbiased.

{t4}

## Claim 5: "too large a step collapses the policy"

`target_token` (V = 16, 8 tokens, r = share of token 3), a 1-layer transformer, RLOO, each
batch reused for 4 epochs × 2 minibatches; `reinforce` ignores that the samples went stale,
`ppo` clips the ratio (ε = 0.2). {args.seeds} seeds per cell, 60 updates, one pg sweep (two
compiles). Adam with global-norm clipping at 1, so the learning rate sets the size of each
step. Collapsed: a seed whose final score (last 10% of updates) is below its first.

{t5}

Measured: up to a rate of 0.1 the clipped objective keeps every seed at the optimum, while
REINFORCE on stale samples already loses score and seeds. At 0.3 and above both collapse in a
large share of seeds, and clipping does not prevent it (at 0.3 it did no better than REINFORCE
in this run): it bounds how far one epoch moves each ratio, not how far Adam moves the
parameters. The claim holds for both; PPO's protection reaches only moderate steps.

Regenerate: `python experiments/estimator_lab.py` ({time.time() - start:.0f} s on this machine).
"""
  path = os.path.join(args.workdir, "report.md")
  with open(path, "w") as f:
    f.write(report)
  print(report)
  print(f"report: {path}\nfigure: {figure}")


if __name__ == "__main__":
  main()
