"""The estimator lab: the source text's claims about the score-function estimator, measured.

    python experiments/estimator_lab.py [--workdir reports/estimator_lab]
        [--groups 1000 4000 16000 64000] [--seed 0] [--seeds 16] [--sweep-workdir DIR]

About 150 s on a 2-core CPU (the default run: 145 s measured, with other jobs sharing the
machine). Writes report.md (tables with standard errors, conclusions generated from the
numbers) and bias_vs_samples.png into the workdir (see pg/lab.py for the problems and the
statistics). Every advantage estimator in the registry (`pg.ADVANTAGE_ESTIMATORS`, a fork's
included) is measured; those that need a critic get one.

1. "The estimator is unbiased": relative bias, cosine to ∇J and the scale along it, each with a
   jackknife standard error, at several sample sizes N; a Bonferroni z-test of mean ĝ = ∇J, and
   of whether mean ĝ is a multiple of ∇J.
2. "A baseline changes variance but not the expectation": variance (tr Σ), SNR and the
   reduction factor against plain REINFORCE at an equal budget, and the same with every score
   shifted by +5.
3. "The same scalar multiplies every token": gradient variance on the parameters of tokens that
   cannot matter, sequence-level estimators against per-token ones with an exact, a noisy and a
   learned critic (tabular least squares on M Monte-Carlo returns).
4. "λ trades bias against variance": GAE advantages and gradients across λ with critics of
   controlled quality, against the true advantages.
5. "Too large a step collapses the policy": final score and collapse rate across seeds for
   REINFORCE on reused samples against PPO's clipped objective, at increasing learning rates
   (a pg.sweep in a fresh temporary folder; `--sweep-workdir DIR` keeps it under DIR/<hash of
   the config>, so a rerun reuses runs only when their config is identical).
"""

import time

_START = time.time()  # the runtime in the report counts the imports too

import argparse  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402

import pg  # noqa: E402
from pg import configs, lab, sweep  # noqa: E402

GROUP_SIZE = 4
OFFSET = 5.0
REFERENCE = "none"                 # the estimator the variance reductions are against
NEEDLE_FIRST_IRRELEVANT = 2        # claim 3: θ[t ≥ 2] cannot matter
CRITIC_NOISES = (0.1, 0.3)         # σ of the noisy critics
CLAIM_3_CRITIC_SIZES = (16, 256, 4096)  # M of the learned critics of claim 3
CLAIM_4_CRITIC_SIZE = 256          # M of the learned critic of claim 4
LAMBDAS = (0.0, 0.5, 0.9, 0.95, 1.0)
Z_SIGNIFICANT = 3.0                # a difference counts when it exceeds 3 standard errors
SHIFT_ROUNDING = 1e-3              # float32 rounding of scores + OFFSET, relative


# Formatting.

def pm(e, digits=3):
  """'value ± se' (no '-0.000')."""
  v, s = (float(x) for x in e)
  v = 0.0 if abs(v) < 0.5 * 10 ** -digits else v
  return f"{v:.{digits}f} ± {s:.{digits}f}"


def table(header, rows):
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(lines)


def names(xs):
  xs = [f"`{x}`" for x in xs]
  if not xs:
    return "none"
  return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]


def diff_z(a, b):
  """(a − b) / se(a − b) for independent estimates."""
  return (a.value - b.value) / max(np.hypot(a.se, b.se), 1e-300)


STEADY = " (no step the other way beyond 2 standard errors)"


def trend(estimates, xs, what, digits=4):
  """A sentence on how a measured quantity moves along xs, from the numbers: the overall change
  first to last against 3 SE, and whether every step goes the same way (or is within 2 SE)."""
  first, last = estimates[0], estimates[-1]
  z = diff_z(last, first)
  steps = [diff_z(b, a) for a, b in zip(estimates, estimates[1:])]
  head = (f"{what} goes from {pm(first, digits)} at λ = {xs[0]:g} to {pm(last, digits)} at "
          f"λ = {xs[-1]:g}")
  if z > Z_SIGNIFICANT:
    mono = all(s > -2 for s in steps)
    return "rises", f"{head}: it rises{STEADY if mono else ', not monotonically'}"
  if z < -Z_SIGNIFICANT:
    mono = all(s < 2 for s in steps)
    return "falls", f"{head}: it falls{STEADY if mono else ', not monotonically'}"
  return "flat", f"{head}: no change beyond {Z_SIGNIFICANT:g} standard errors"


# Measurements.

def measurable_estimators(problem, key):
  """The registry's estimators, and {name: error} for those that fail on this problem."""
  ok, failed = [], {}
  for name in lab.estimator_names():
    try:
      lab.group_estimates(problem, name, 8, GROUP_SIZE, key).block_until_ready()
      ok.append(name)
    except Exception as e:  # noqa: BLE001 - a fork's estimator may not fit the lab
      failed[name] = f"{type(e).__name__}: {e}"
  return tuple(ok), failed


def claim_1_and_2(problem, exact, estimators, sizes, key):
  """Per estimator: Stats at each N (offset 0) and at the largest N with every score + OFFSET
  (the same samples: a paired comparison)."""
  by_n, shifted = {}, {}
  for i, name in enumerate(estimators):
    k = jax.random.fold_in(key, i)
    g = np.asarray(lab.group_estimates(problem, name, max(sizes), GROUP_SIZE, k))
    by_n[name] = {n: lab.statistics_of(g[:n], exact) for n in sizes}
    g_off = lab.group_estimates(problem, name, max(sizes), GROUP_SIZE, k, offset=OFFSET)
    shifted[name] = lab.statistics_of(g_off, exact)
  return by_n, shifted


def claim_1_text(by_n, sizes, estimators):
  N = max(sizes)
  top = {name: by_n[name][N] for name in estimators}
  unbiased = [n for n in estimators if not top[n].biased]
  biased = [n for n in estimators if top[n].biased]
  thr = top[estimators[0]].z_threshold
  out = []
  if unbiased:
    out.append(f"At N = {N:,} the z-test finds no bias in {names(unbiased)} (max |z| ≤ "
               f"{max(top[n].max_abs_z for n in unbiased):.1f} < {thr:.2f}): the claim holds for "
               f"them.")
  if biased:
    scales = "; ".join(f"`{n}` {pm(top[n].scale)}" for n in biased)
    turned = [n for n in biased if top[n].turned]
    straight = [n for n in biased if not top[n].turned]
    how = []
    if turned:
      how.append(f"{names(turned)} also turn it: the part of mean ĝ orthogonal to ∇J fails the "
                 f"same test (cosine " + ", ".join(pm(top[n].cosine, 4) for n in turned) + ")")
    if straight:
      how.append(f"for {names(straight)} the orthogonal part passes it: at this N they only "
                 f"rescale ∇J")
    out.append(f"**The claim fails for {names(biased)}**: the z-test rejects mean ĝ = ∇J (max "
               f"|z| ≥ {min(top[n].max_abs_z for n in biased):.1f} > {thr:.2f}). Their scale "
               f"along ∇J: {scales}. " + "; ".join(how) + ".")
  if "group_mean" in top:
    s = top["group_mean"]
    pred = (GROUP_SIZE - 1) / GROUP_SIZE
    z = (s.scale.value - pred) / s.scale.se
    agree = (f"within {abs(z):.1f} standard errors of" if abs(z) <= Z_SIGNIFICANT else
             f"**{abs(z):.1f} standard errors away from**")
    out.append(f"`group_mean`'s scale, {pm(s.scale)}, is {agree} (G − 1)/G = {pred:.2f}, the "
               f"shrinkage a group mean that includes the sample itself predicts.")
  lo, hi = min(sizes), max(sizes)
  if lo < hi:
    fall = {n: by_n[n][lo].relative_bias.value / by_n[n][hi].relative_bias.value
            for n in estimators}
    span = lambda xs: (f"{min(fall[n] for n in xs):.1f}–{max(fall[n] for n in xs):.1f}"
                       if len(xs) > 1 else f"{fall[xs[0]]:.1f}")
    parts = []
    if unbiased:
      parts.append(f"that of the estimators the test passes falls by a factor of "
                   f"{span(unbiased)} (1/√N predicts {np.sqrt(hi / lo):.1f})")
    if biased:
      flat = max(fall[n] for n in biased) < 2
      parts.append(f"that of the biased ones by {span(biased)}" +
                   (": it levels off at their bias" if flat else ""))
    out.append(f"From N = {lo:,} to {hi:,} the relative bias: " + "; ".join(parts) + ".")
  return "\n".join(out), unbiased, biased


def claim_1_tables(by_n, sizes, estimators):
  N = max(sizes)
  bias_rows = [[f"`{n}`"] + [pm(by_n[n][m].relative_bias) for m in sizes] for n in estimators]
  cos_rows = [[f"`{n}`"] + [pm(by_n[n][m].cosine, 4) for m in sizes] for n in estimators]
  test_rows = []
  for n in estimators:
    s = by_n[n][N]
    test_rows.append([f"`{n}`", pm(s.scale), f"{s.max_abs_z:.1f}",
                      "**biased**" if s.biased else "unbiased", f"{s.max_abs_z_direction:.1f}",
                      "**turned**" if s.turned else "along ∇J"])
  t_bias = table(["estimator"] + [f"N = {m:,}" for m in sizes], bias_rows)
  t_cos = table(["estimator"] + [f"N = {m:,}" for m in sizes], cos_rows)
  t_test = table(["estimator", "scale along ∇J (1 = unbiased)", "max abs z, mean ĝ − ∇J",
                  "verdict", "max abs z, orthogonal part", "direction"], test_rows)
  return t_bias, t_cos, t_test


def claim_2(by_n, shifted, N, estimators, unbiased, biased):
  ref = REFERENCE if REFERENCE in estimators else estimators[0]
  top = {n: by_n[n][N] for n in estimators}
  ratio = {n: lab.variance_ratio(top[ref], top[n]) for n in estimators}
  ratio_off = {n: lab.variance_ratio(shifted[ref], shifted[n]) for n in estimators}
  # tr Σ(+5) / tr Σ on the same samples: batch b of both left out together
  growth = {n: lab.jackknife(lambda a, b: a.var_D.sum() / b.var_D.sum(), shifted[n].moments,
                             top[n].moments) for n in estimators}
  rows = []
  for n in estimators:
    s, so = top[n], shifted[n]
    reference = n == ref
    rows.append([f"`{n}`", pm(s.variance, 4), pm(s.snr, 4), pm(s.own_snr, 4),
                 "1 (reference)" if reference else pm(ratio[n]), pm(so.variance, 4),
                 "1 (reference)" if reference else pm(ratio_off[n], 2), pm(growth[n])])
  header = ["estimator", "tr Σ per estimate", "SNR ‖∇J‖²/tr Σ", "‖mean ĝ‖²/tr Σ",
            f"tr Σ_{ref} / tr Σ", f"tr Σ, scores + {OFFSET:g}",
            f"tr Σ_{ref} / tr Σ, scores + {OFFSET:g}", f"tr Σ(+{OFFSET:g}) / tr Σ (same samples)"]
  others = [n for n in estimators if n != ref]
  less = [n for n in others if (ratio[n].value - 1) / ratio[n].se > Z_SIGNIFICANT]
  more = [n for n in others if (1 - ratio[n].value) / ratio[n].se > Z_SIGNIFICANT]
  out = []
  order = sorted(estimators, key=lambda n: -top[n].snr.value)
  chain = f"`{order[0]}`"
  for a, b in zip(order, order[1:]):
    chain += (" ≈ " if diff_z(top[a].snr, top[b].snr) < 2 else " > ") + f"`{b}`"
  out.append(f"Ranked by SNR ‖∇J‖²/tr Σ at an equal budget (≈: within 2 standard errors): "
             f"{chain}.")
  if less:
    out.append(f"Against `{ref}`, {names(less)} cut tr Σ by a factor of "
               f"{min(ratio[n].value for n in less):.2f}–{max(ratio[n].value for n in less):.2f}.")
  if more:
    out.append(f"{names(more)} have *more* variance than `{ref}` (factor "
               f"{min(ratio[n].value for n in more):.2f}–{max(ratio[n].value for n in more):.2f} "
               f"below 1); they also rescale the gradient, so compare their ‖mean ĝ‖²/tr Σ.")
  keep = [n for n in others if n in unbiased]
  change = [n for n in others if n in biased]
  verdict = (f"**Verdict on the claim.** A baseline does change the variance "
             f"({len(less) + len(more)} of {len(others)} estimators differ from `{ref}` by more "
             f"than {Z_SIGNIFICANT:g} standard errors). It leaves the expectation alone for "
             f"{names(keep)} (claim 1's z-test)")
  verdict += (f"; **it does not for {names(change)}**, whose baselines use the sample itself "
              f"or rescale: for them the claim is false." if change else ".")
  out.append(verdict)
  g_ref = growth[ref]
  # on the same samples the shift cancels exactly in r − b, up to float32 rounding (< 0.1%)
  inv = [n for n in others
         if abs(growth[n].value - 1) <= Z_SIGNIFICANT * growth[n].se + SHIFT_ROUNDING]
  var = [n for n in others if n not in inv]
  shift = (f"Shifting every score by +{OFFSET:g} (∇J unchanged) multiplies `{ref}`'s tr Σ by "
           f"{pm(g_ref, 1)}")
  shift += (f"; it leaves the variance of {names(inv)} unchanged (within "
            f"{Z_SIGNIFICANT:g} standard errors + {SHIFT_ROUNDING:.1%} of float32 rounding)"
            if inv else "")
  shift += (f", and changes {names(var)} by " + ", ".join(f"{pm(growth[n], 2)}" for n in var)
            if var else "")
  out.append(shift + ".")
  return table(header, rows), "\n".join(out), ratio


def claim_3(n_groups, key):
  p = lab.needle_problem()
  exact = np.asarray(lab.exact_gradient(p)).reshape(p.length, -1)
  estimators, _ = measurable_estimators(p, jax.random.fold_in(key, 999))
  critic_user = "gae" if "gae" in estimators else next(
      (n for n in estimators if lab.needs_values(n)), None)
  cases = [(n, "exact" if lab.needs_values(n) else None, None) for n in estimators]
  if critic_user:
    cases += [(critic_user, f"noisy, σ = {s:g}", lab.noisy_values(p, s)) for s in CRITIC_NOISES]
    cases += [(critic_user, f"learned, M = {m:,}",
               lab.learned_values(p, m, jax.random.fold_in(key, 10_000 + m)))
              for m in CLAIM_3_CRITIC_SIZES]
  rows, results = [], []
  for i, (name, critic, values) in enumerate(cases):
    k = jax.random.fold_in(key, i)
    g = lab.group_estimates(p, name, n_groups, GROUP_SIZE, k, values_NxT=values)
    c = lab.credit_statistics(g, p, NEEDLE_FIRST_IRRELEVANT)
    const = lab.constant_over_tokens(p, name, k, GROUP_SIZE, values_NxT=values)
    err = (lab.critic_error(p, values if values is not None else lab.exact_values(p))
           if critic else None)
    results.append((name, critic, const, err, c))
    rows.append([f"`{name}`", critic or "—", "—" if err is None else f"{err:.4f}",
                 "yes" if const else "no", pm(c.relevant, 4), pm(c.irrelevant, 4),
                 f"{100 * c.share.value:.1f}% ± {100 * c.share.se:.1f}%"])
  header = ["estimator", "critic", "critic RMS error (exact)", "same advantage at every token",
            f"variance on θ[t < {NEEDLE_FIRST_IRRELEVANT}] (relevant)",
            f"variance on θ[t ≥ {NEEDLE_FIRST_IRRELEVANT}] (irrelevant)", "share on irrelevant"]
  norms = ", ".join(f"{x:.3f}" for x in np.linalg.norm(exact, axis=1))
  pct = lambda c: f"{100 * c.share.value:.1f}%"
  seq = [r for r in results if r[2] and r[1] in (None, "exact")]
  tok = [r for r in results if not r[2] and r[1] in (None, "exact")]
  out = []
  if seq:
    shares = [r[4].share.value for r in seq]
    out.append(f"The estimators whose advantage is the same at every token "
               f"({names([r[0] for r in seq])}) put {100 * min(shares):.0f}–"
               f"{100 * max(shares):.0f}% of their gradient variance on θ[t ≥ "
               f"{NEEDLE_FIRST_IRRELEVANT}], where ∇J = 0.")
  if tok:
    out.append("Per token, with the exact critic: " + ", ".join(
        f"`{r[0]}` {pct(r[4])}" for r in tok) + ".")
  noisy = [r for r in results if r[1] and r[1].startswith("noisy")]
  learned = [r for r in results if r[1] and r[1].startswith("learned")]
  if noisy:
    out.append(f"With a noisy critic, `{critic_user}`: " + ", ".join(
        f"{pct(r[4])} ({r[1]})" for r in noisy) + ".")
  if learned:
    s = [r[4].share for r in learned]
    falls = all(diff_z(b, a) < -Z_SIGNIFICANT for a, b in zip(s, s[1:]))
    out.append(f"With the learned critic, `{critic_user}` puts " + ", ".join(
        f"{pct(r[4])} at M = {r[1].split('= ')[1]} (critic RMS error {r[3]:.3f})"
        for r in learned) +
        (": the share falls with every increase of M, as the critic improves." if falls else
         ": the share does not fall steadily with M."))
  if seq and tok:
    worst_tok = max(r[4].share.value + Z_SIGNIFICANT * r[4].share.se for r in tok)
    holds = all(r[4].share.value - Z_SIGNIFICANT * r[4].share.se > worst_tok for r in seq)
    out.append("**Verdict on the claim.** " + (
        "It holds: every sequence-level estimator puts more of its variance on the irrelevant "
        "tokens than any per-token estimator with the exact critic, beyond "
        f"{Z_SIGNIFICANT:g} standard errors." if holds else
        "**Not confirmed**: some sequence-level estimator does not put more variance on the "
        "irrelevant tokens than the per-token ones, beyond "
        f"{Z_SIGNIFICANT:g} standard errors."))
  return table(header, rows), "\n".join(out), norms, p


def claim_4(n_groups, n_samples, key):
  p = lab.default_problem()
  exact = lab.exact_gradient(p)
  critics = [("exact", lab.exact_values(p))]
  critics += [(f"noisy, σ = {s:g}", lab.noisy_values(p, s)) for s in CRITIC_NOISES]
  critics += [(f"learned, M = {CLAIM_4_CRITIC_SIZE}",
               lab.learned_values(p, CLAIM_4_CRITIC_SIZE, jax.random.fold_in(key, 10_000)))]
  rows, out = [], []
  for c, (label, values) in enumerate(critics):
    err = lab.critic_error(p, values)
    adv, grad = [], []
    for j, lam in enumerate(LAMBDAS):
      k = jax.random.fold_in(key, 100 * c + j)
      a = lab.gae_advantage_error(p, lam, 0.0, n_samples, jax.random.fold_in(k, 0),
                                  values_NxT=values)
      g = lab.group_estimates(p, "gae", n_groups, GROUP_SIZE, jax.random.fold_in(k, 1),
                              hp=pg.make_hparams(lam=lam), values_NxT=values)
      s = lab.statistics_of(g, exact)
      adv.append(a)
      grad.append(s)
      rows.append([label, f"{err:.4f}", f"{lam:g}", pm(a.bias2, 4), pm(a.variance, 4),
                   pm(s.relative_bias), pm(s.variance, 4), f"{s.max_abs_z:.1f}",
                   "**biased**" if s.biased else "unbiased"])
    b_dir, b_text = trend([a.bias2 for a in adv], LAMBDAS, "the advantage's bias²")
    v_dir, v_text = trend([a.variance for a in adv], LAMBDAS, "its variance")
    biased_at = [lam for lam, s in zip(LAMBDAS, grad) if s.biased]
    unbiased_at = [lam for lam, s in zip(LAMBDAS, grad) if not s.biased]
    lams = lambda xs: ", ".join(f"{x:g}" for x in xs) or "none"
    if not biased_at:
      grad_text = "the gradient passes the z-test at every λ"
    elif not unbiased_at:
      grad_text = "the gradient fails the z-test at every λ"
    else:
      grad_text = (f"the gradient fails the z-test at λ ∈ {{{lams(biased_at)}}} and passes it "
                   f"at λ ∈ {{{lams(unbiased_at)}}}")
    if label == "exact":
      zero = all(abs(a.bias2.value) <= Z_SIGNIFICANT * a.bias2.se + 1e-12 for a in adv)
      verdict = ("bias² is 0 within 3 standard errors at every λ" if zero else
                 "**bias² is not 0 at every λ**") + "; only the variance moves"
    else:
      trade = b_dir == "falls" and v_dir == "rises"
      verdict = ("λ trades bias against variance here, as claimed" if trade else
                 "**the advantage does not trade bias against variance here, unlike the "
                 "claim**")
    grad_trade = (label != "exact" and biased_at and not grad[-1].biased and
                  all(lam < min(unbiased_at) for lam in biased_at))
    out.append(f"- **{label} critic** (RMS error {err:.3f}): {b_text}; {v_text}. {verdict}. "
               f"For the policy, {grad_text}" +
               (": biased for small λ, unbiased at λ = 1, the gradient's bias falls as λ → 1."
                if grad_trade else "."))
  header = ["critic", "critic RMS error (exact)", "λ", "advantage bias²", "advantage variance",
            "gradient rel. bias", "gradient tr Σ", "max abs z", "gradient verdict"]
  return table(header, rows), "\n".join(out)


def claim_5_config(seeds):
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


def claim_5(c, workdir, verbose):
  """Vanilla PG (REINFORCE loss, samples reused for 4 epochs × 2 minibatches, no ratio) against
  PPO's clipped objective at the same learning rates: one pg.sweep, two compiles."""
  summary = sweep.run(c, workdir, verbose=verbose, log=(print if verbose else lambda *_: None))
  rows, cells = [], {}
  for s in sorted(summary, key=lambda s: (s.values["policy_loss"], s.values["learning_rate"])):
    x = s.curves_SxU
    S = x.shape[0]
    start, final = x[:, 0], x[:, -max(1, x.shape[1] // 10):].mean(axis=1)
    collapsed = int(np.sum(final < start))
    loss, lr = s.values["policy_loss"], s.values["learning_rate"]
    cells[(loss, lr)] = (collapsed, S, final)
    rate = collapsed / S
    rows.append([loss, f"{lr:g}", f"{final.mean():.3f} ± {final.std(ddof=1) / np.sqrt(S):.3f}",
                 f"{collapsed}/{S} ± {np.sqrt(S * rate * (1 - rate)):.1f}"])
  header = ["loss", "learning rate", "final score (± SE over seeds)",
            "collapsed (final < its start; ± binomial SE)"]
  return table(header, rows), claim_5_text(cells)


def claim_5_text(cells):
  losses = sorted({k[0] for k in cells})
  rates = sorted({k[1] for k in cells})
  out, safe = [], {}
  for loss in losses:
    upto = 0
    for lr in rates:
      if cells[(loss, lr)][0]:
        break
      upto = lr
    counts = ", ".join(f"{cells[(loss, lr)][0]}/{cells[(loss, lr)][1]}" for lr in rates)
    lo, hi = cells[(loss, rates[0])], cells[(loss, rates[-1])]
    p = scipy_stats.fisher_exact([[hi[0], hi[1] - hi[0]], [lo[0], lo[1] - lo[0]]],
                                 alternative="greater").pvalue
    safe[loss] = upto
    keeps = (f"keeps every seed up to a learning rate of {upto:g}" if upto else
             "loses seeds already at the smallest rate")
    out.append(f"- `{loss}` {keeps} (collapsed seeds by rate {', '.join(f'{r:g}' for r in rates)}: "
               f"{counts}). " + (
                   f"More seeds collapse at {rates[-1]:g} than at {rates[0]:g} (one-sided Fisher "
                   f"exact p = {p:.2g}): the claim holds for `{loss}`." if p < 0.05 else
                   f"**The collapse at {rates[-1]:g} is not significantly more frequent than at "
                   f"{rates[0]:g}** (one-sided Fisher p = {p:.2g}): not confirmed for `{loss}`."))
  if len(losses) == 2 and "ppo" in losses:
    other = [l for l in losses if l != "ppo"][0]
    better, worse, same = [], [], []
    for lr in rates:
      a, b = cells[("ppo", lr)], cells[(other, lr)]
      p = scipy_stats.fisher_exact([[a[0], a[1] - a[0]], [b[0], b[1] - b[0]]]).pvalue
      (better if a[0] < b[0] and p < 0.05 else worse if a[0] > b[0] and p < 0.05 else
       same).append((lr, p))
    fmt = lambda xs: ", ".join(f"{lr:g} (p = {p:.2g})" for lr, p in xs)
    sent = (f"- `ppo` against `{other}` at the same rate, by two-sided Fisher exact tests of "
            f"the collapse counts: ")
    parts = []
    if better:
      parts.append(f"`ppo` collapses in fewer seeds at {fmt(better)}")
    if worse:
      parts.append(f"in **more** seeds at {fmt(worse)}")
    if same:
      parts.append(f"the difference is not significant at {fmt(same)}")
    out.append(sent + "; ".join(parts) + ".")
    if not better:
      head = (f"- **With {cells[('ppo', rates[0])][1]} seeds per cell, clipping collapses "
              f"significantly fewer seeds at no rate tried**")
      out.append(head + (
          f": `ppo` keeps every seed up to {safe['ppo']:g} against {safe[other]:g} for "
          f"`{other}`, but the counts at the rates between do not differ significantly."
          if safe["ppo"] > safe[other] else "."))
  return "\n".join(out)


# The report.

def plot_bias(by_n, sizes, path):
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, (name, stats) in enumerate(by_n.items()):
    s = [stats[n] for n in sizes]
    ax.errorbar(sizes, [x.relative_bias.value for x in s], yerr=[x.relative_bias.se for x in s],
                fmt="o-", color=f"C{i % 10}", label=name, capsize=2)
    ax.plot(sizes, [x.noise_floor for x in s], ":", color=f"C{i % 10}", lw=1)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel(f"groups of {GROUP_SIZE} samples, N")
  ax.set_ylabel("‖mean ĝ − ∇J‖ / ‖∇J‖")
  ax.set_title("relative bias ± SE (solid) and the noise floor of an unbiased estimator (dotted)",
               fontsize=9)
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def config_digest(c):
  return hashlib.sha1(c.to_json_best_effort(sort_keys=True).encode()).hexdigest()[:12]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=os.path.join("reports", "estimator_lab"))
  parser.add_argument("--groups", type=int, nargs="+", default=[1000, 4000, 16000, 64000])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--seeds", type=int, default=16, help="training seeds per cell (claim 5)")
  parser.add_argument("--sweep-workdir", default=None,
                      help="keep claim 5's sweep under DIR/<hash of its config> and reuse runs "
                           "of an identical config (default: a fresh temporary folder)")
  args = parser.parse_args()
  os.makedirs(args.workdir, exist_ok=True)
  problem = lab.default_problem()
  exact = lab.exact_gradient(problem)
  key = jax.random.PRNGKey(args.seed)
  sizes = sorted(args.groups)
  N = max(sizes)
  k = lab.NUM_BATCHES
  estimators, failed = measurable_estimators(problem, jax.random.fold_in(key, 99))
  by_n, shifted = claim_1_and_2(problem, exact, estimators, sizes, jax.random.fold_in(key, 1))
  text_1, unbiased, biased = claim_1_text(by_n, sizes, estimators)
  t1_bias, t1_cos, t1_test = claim_1_tables(by_n, sizes, estimators)
  figure = plot_bias(by_n, sizes, os.path.join(args.workdir, "bias_vs_samples.png"))
  t2, text_2, ratio = claim_2(by_n, shifted, N, estimators, unbiased, biased)
  t3, text_3, norms3, needle = claim_3(N // 4, jax.random.fold_in(key, 3))
  t4, text_4 = claim_4(N // 4, N, jax.random.fold_in(key, 4))
  c5 = claim_5_config(args.seeds)
  if args.sweep_workdir:
    sweep_dir = os.path.join(args.sweep_workdir, config_digest(c5))
    sweep_where = f"in `{sweep_dir}`, keyed by a hash of its config"
    t5, text_5 = claim_5(c5, sweep_dir, verbose=False)
  else:
    sweep_where = "run in a fresh temporary folder"
    with tempfile.TemporaryDirectory(prefix="estimator_lab_claim5_") as tmp:
      t5, text_5 = claim_5(c5, tmp, verbose=False)
  ref = REFERENCE if REFERENCE in estimators else estimators[0]
  main_rows = [[f"`{n}`", pm(by_n[n][N].scale), "**biased**" if by_n[n][N].biased else "unbiased",
                pm(by_n[n][N].snr, 4), "1 (reference)" if n == ref else pm(ratio[n])]
               for n in estimators]
  main_table = table(["estimator", "scale along ∇J (1 = unbiased)", "verdict (z-test)",
                      "SNR ‖∇J‖²/tr Σ", f"tr Σ_{ref} / tr Σ"], main_rows)
  D = int(np.sum(np.abs(np.asarray(exact)) > 0))
  critics = [n for n in estimators if lab.needs_values(n)]
  skipped = ("" if not failed else "\n\nNot measured (the estimator fails on this problem): " +
             "; ".join(f"`{n}`: {e}" for n, e in failed.items()) + ".")
  se_note = (f"± is one standard error: the N estimates (independent replicates from PRNG seed "
             f"{args.seed}) are split into k = {k} batches and each statistic's standard error "
             f"is the delete-one-batch jackknife over them (for a mean, exactly sd_b/√k)")
  elapsed = time.time() - _START
  report = f"""# The estimator lab

Every advantage estimator in the registry (`pg.ADVANTAGE_ESTIMATORS`: {names(estimators)}) is
measured; those that need a critic ({names(critics)}) get the exact V unless a table says
otherwise.{skipped}

Problem of claims 1, 2 and 4: a tabular autoregressive policy over V = {problem.vocab_size}
tokens and T = {problem.length} steps ({problem.vocab_size ** problem.length} sequences, listed),
θ drawn at scale 0.7 (seed 0); r(y) = share of 2s + 1 when the first and last tokens match. J,
∇J and V(y_<t) are exact. One estimate ĝ = one group of G = {GROUP_SIZE} samples through the
registered estimator and the token-level REINFORCE surrogate. Default hyperparameters (γ = 1,
λ = 0.95, ε = 1e-6); `moving_average` gets a converged EMA (b = E[r]). ∇J has {D} nonzero
components. {se_note}. Conclusions below are generated from the measured numbers.

## Main table

N = {N:,} estimates of G = {GROUP_SIZE} samples each (claims 1 and 2), ± one standard error
(jackknife over k = {k} batches); the verdict is claim 1's z-test.

{main_table}

## Claim 1: "the estimator is unbiased"

N nested (the first N of {N:,} independent estimates, seed {args.seed}); ± one jackknife
standard error over k = {k} batches of each N. Relative bias ‖mean ĝ − ∇J‖/‖∇J‖ (an unbiased
estimator's is the noise √(tr Σ/N)/‖∇J‖, dotted in the figure, and falls as 1/√N):

{t1_bias}

Cosine between mean ĝ and ∇J:

{t1_cos}

At N = {N:,}: the scale ⟨mean ĝ, ∇J⟩/‖∇J‖² (1 if unbiased); the largest |z| of mean − exact
over the {D} components that vary, against the two-sided Bonferroni threshold at α = 1e-3
({by_n[estimators[0]][N].z_threshold:.2f}); and the same test on the part of ĝ orthogonal to
∇J, which fails only when mean ĝ is not a multiple of ∇J ("turned"). The z values are test
statistics, already in units of their standard error.

{t1_test}

{text_1}

![bias against sample size](bias_vs_samples.png)

## Claim 2: "a baseline changes variance but not the expectation"

N = {N:,} estimates of G = {GROUP_SIZE} samples each, the same as claim 1 (an equal budget for
every row); ± one jackknife standard error over k = {k} batches (for a ratio of two estimators,
batch b of both left out together). tr Σ, SNR = ‖∇J‖²/tr Σ, ‖mean ĝ‖²/tr Σ (the SNR of what a
rescaling estimator does estimate) and the reduction factor tr Σ_{ref} / tr Σ (above 1: less
variance). The last three columns shift every score by +{OFFSET:g} on the same samples, which
leaves ∇J unchanged.

{t2}

{text_2}

## Claim 3: "the same scalar multiplies every token" (credit assignment)

Problem: V = {needle.vocab_size}, T = {needle.length} ({needle.vocab_size ** needle.length}
sequences), r(y) = 1[y_1 = 2]: only the token at t = 1 matters, so the exact gradient on θ[t ≥
{NEEDLE_FIRST_IRRELEVANT}] is 0 (‖∇J‖ by step: {norms3}). Sum of the gradient components'
variances per estimate, N = {N // 4:,} estimates of G = {GROUP_SIZE} (seed {args.seed}), ± one
jackknife standard error over k = {k} batches. Critics: exact V; V + σ·ε(state); and *learned*:
tabular least squares on the Monte-Carlo returns of M sequences sampled independently of the
estimates (the mean return through each state, the overall mean for a state never visited).
Critic RMS error: √(E_π (1/T) Σ_t (V̂ − V)²), exact by enumeration for the critic used (no
sampling error given it). "Same advantage at every token" is checked on the estimator's output.
Here the return after t = 1 is a function of the prefix, so a tabular critic is exact on every
state it has seen: its error, and the variance it leaves, come from the states its M samples
missed and from the noisy means at t ≤ 1.

{t3}

{text_3}

## Claim 4: "λ trades bias against variance"

GAE(γ = 1, λ) on the problem of claim 1 with four critics: exact; V + σ·ε(state), ε ~ N(0, 1)
fixed per prefix; and learned from M = {CLAIM_4_CRITIC_SIZE} independent samples as in claim 3.
Advantage columns: against the true A*(s, a) = V(s') − V(s), bias² (corrected for the noise of
each (s, a) mean) and variance per (state, action) averaged over visits, from {N:,} sampled
sequences per row. Gradient columns: as in claim 1, N = {N // 4:,} groups of G = {GROUP_SIZE}
per row. Independent samples for every row (seed {args.seed}); ± one jackknife standard error
over k = {k} batches of sequences (advantages) or estimates (gradients). Note that at λ = 1 the
advantage is G_t − V̂(s_t): its bias is the critic's error, a function of the state only, which
biases the advantage but not the policy gradient.

{t4}

max abs z and the verdict are claim 1's test on each row's gradient.

{text_4}

## Claim 5: "too large a step collapses the policy"

`target_token` (V = 16, 8 tokens, r = share of token 3), a 1-layer transformer, RLOO, each
batch reused for {c5.ppo_epochs} epochs × {c5.num_minibatches} minibatches; `reinforce` ignores
that the samples went stale, `ppo` clips the ratio (ε = 0.2). {args.seeds} seeds per cell
(training runs of seeds 0–{args.seeds - 1}), {c5.updates_per_chunk * c5.num_chunks} updates of
{c5.num_prompts} prompts × {c5.group_size} samples, one pg sweep (two compiles, {sweep_where}). Adam with global-norm clipping at 1, so the learning rate sets the size of each step.
Final score: mean over the last 10% of updates, ± its standard error over seeds. Collapsed: a
seed whose final score is below its first; ± the binomial standard error √(S p (1 − p)).

{t5}

{text_5}

Regenerate: `python experiments/estimator_lab.py` ({elapsed:.0f} s for this run on a
{os.cpu_count()}-core CPU).
"""
  path = os.path.join(args.workdir, "report.md")
  with open(path, "w") as f:
    f.write(report)
  print(report)
  print(f"report: {path}\nfigure: {figure}")


if __name__ == "__main__":
  main()
