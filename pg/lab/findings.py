"""The estimator lab's conclusions, as sentences generated from the measured numbers.

A difference counts when it exceeds Z_SIGNIFICANT = 3 standard errors, z = (a − b) / se(a − b)
(`statistics.diff_z`); a claim is confirmed or refuted by such tests, so a rerun never
contradicts its own text. One function per claim, over `pg.lab.claims`' measurements.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as scipy_stats

from pg.lab.claims import GROUP_SIZE, LAMBDAS, NEEDLE_FIRST_IRRELEVANT, OFFSET
from pg.lab.statistics import diff_z

Z_SIGNIFICANT = 3.0    # a difference counts when it exceeds 3 standard errors
SHIFT_ROUNDING = 1e-3  # float32 rounding of scores + OFFSET, relative
STEADY = " (no step the other way beyond 2 standard errors)"


# Formatting.

def pm(e, digits=3):
  """'value ± se' (no '-0.000')."""
  v, s = (float(x) for x in e)
  v = 0.0 if abs(v) < 0.5 * 10 ** -digits else v
  return f"{v:.{digits}f} ± {s:.{digits}f}"


def names(xs):
  """`a`, `b` and `c` (or "none")."""
  xs = [f"`{x}`" for x in xs]
  if not xs:
    return "none"
  return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]


def _span(values, digits=2):
  return f"{min(values):.{digits}f}–{max(values):.{digits}f}"


def trend(estimates, xs, what, digits=4):
  """A sentence on how a measured quantity moves along xs (the λ), from the numbers: the
  overall change first to last against 3 SE, and whether every step goes the same way (or is
  within 2 SE). Returns ("rises" | "falls" | "flat", sentence)."""
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


# Claims 1 and 2.

def _how_biased(top, biased):
  turned = [n for n in biased if top[n].turned]
  straight = [n for n in biased if not top[n].turned]
  how = []
  if turned:
    how.append(f"{names(turned)} also turn it: the part of mean ĝ orthogonal to ∇J fails the "
               f"same test (cosine " + ", ".join(pm(top[n].cosine, 4) for n in turned) + ")")
  if straight:
    how.append(f"for {names(straight)} the orthogonal part passes it: at this N they only "
               f"rescale ∇J")
  return "; ".join(how)


def _group_mean_shrinkage(s):
  pred = (GROUP_SIZE - 1) / GROUP_SIZE
  z = (s.scale.value - pred) / s.scale.se
  agree = (f"within {abs(z):.1f} standard errors of" if abs(z) <= Z_SIGNIFICANT else
           f"**{abs(z):.1f} standard errors away from**")
  return (f"`group_mean`'s scale, {pm(s.scale)}, is {agree} (G − 1)/G = {pred:.2f}, the "
          f"shrinkage a group mean that includes the sample itself predicts.")


def _bias_against_n(b):
  lo, hi = b.sizes[0], b.sizes[-1]
  fall = {n: b.by_n[n][lo].relative_bias.value / b.by_n[n][hi].relative_bias.value
          for n in b.estimators}
  span = lambda xs: _span([fall[n] for n in xs], 1) if len(xs) > 1 else f"{fall[xs[0]]:.1f}"
  parts = []
  if b.unbiased:
    parts.append(f"that of the estimators the test passes falls by a factor of "
                 f"{span(b.unbiased)} (1/√N predicts {np.sqrt(hi / lo):.1f})")
  if b.biased:
    flat = max(fall[n] for n in b.biased) < 2
    parts.append(f"that of the biased ones by {span(b.biased)}" +
                 (": it levels off at their bias" if flat else ""))
  return f"From N = {lo:,} to {hi:,} the relative bias: " + "; ".join(parts) + "."


def claim_1_text(b) -> str:
  """Which estimators the z-test finds unbiased at the largest N, how the others are biased,
  group_mean's scale against (G − 1)/G, and the relative bias against N."""
  top, unbiased, biased = b.top, b.unbiased, b.biased
  thr = top[b.estimators[0]].z_threshold
  out = []
  if unbiased:
    out.append(f"At N = {b.sizes[-1]:,} the z-test finds no bias in {names(unbiased)} (max "
               f"|z| ≤ {max(top[n].max_abs_z for n in unbiased):.1f} < {thr:.2f}): the claim "
               f"holds for them.")
  if biased:
    scales = "; ".join(f"`{n}` {pm(top[n].scale)}" for n in biased)
    out.append(f"**The claim fails for {names(biased)}**: the z-test rejects mean ĝ = ∇J (max "
               f"|z| ≥ {min(top[n].max_abs_z for n in biased):.1f} > {thr:.2f}). Their scale "
               f"along ∇J: {scales}. " + _how_biased(top, biased) + ".")
  if "group_mean" in top:
    out.append(_group_mean_shrinkage(top["group_mean"]))
  if b.sizes[0] < b.sizes[-1]:
    out.append(_bias_against_n(b))
  return "\n".join(out)


def _snr_ranking(top):
  order = sorted(top, key=lambda n: -top[n].snr.value)
  chain = f"`{order[0]}`"
  for a, b in zip(order, order[1:]):
    chain += (" ≈ " if diff_z(top[a].snr, top[b].snr) < 2 else " > ") + f"`{b}`"
  return (f"Ranked by SNR ‖∇J‖²/tr Σ at an equal budget (≈: within 2 standard errors): "
          f"{chain}.")


def _score_shift(b, others):
  growth, ref = b.growth, b.reference
  # on the same samples the shift cancels exactly in r − b, up to float32 rounding (< 0.1%)
  inv = [n for n in others
         if abs(growth[n].value - 1) <= Z_SIGNIFICANT * growth[n].se + SHIFT_ROUNDING]
  var = [n for n in others if n not in inv]
  shift = (f"Shifting every score by +{OFFSET:g} (∇J unchanged) multiplies `{ref}`'s tr Σ by "
           f"{pm(growth[ref], 1)}")
  shift += (f"; it leaves the variance of {names(inv)} unchanged (within "
            f"{Z_SIGNIFICANT:g} standard errors + {SHIFT_ROUNDING:.1%} of float32 rounding)"
            if inv else "")
  shift += (f", and changes {names(var)} by " + ", ".join(f"{pm(growth[n], 2)}" for n in var)
            if var else "")
  return shift + "."


def claim_2_text(b) -> str:
  """The SNR ranking, the variance reductions against the reference, the verdict (with claim
  1's z-test), and what a score shift does to each estimator's variance."""
  ref, ratio = b.reference, b.ratio
  others = [n for n in b.estimators if n != ref]
  less = [n for n in others if (ratio[n].value - 1) / ratio[n].se > Z_SIGNIFICANT]
  more = [n for n in others if (1 - ratio[n].value) / ratio[n].se > Z_SIGNIFICANT]
  out = [_snr_ranking(b.top)]
  if less:
    out.append(f"Against `{ref}`, {names(less)} cut tr Σ by a factor of "
               f"{_span([ratio[n].value for n in less])}.")
  if more:
    out.append(f"{names(more)} have *more* variance than `{ref}` (factor "
               f"{_span([ratio[n].value for n in more])} "
               f"below 1); they also rescale the gradient, so compare their ‖mean ĝ‖²/tr Σ.")
  keep = [n for n in others if n in b.unbiased]
  change = [n for n in others if n in b.biased]
  verdict = (f"**Verdict on the claim.** A baseline does change the variance "
             f"({len(less) + len(more)} of {len(others)} estimators differ from `{ref}` by more "
             f"than {Z_SIGNIFICANT:g} standard errors). It leaves the expectation alone for "
             f"{names(keep)} (claim 1's z-test)")
  verdict += (f"; **it does not for {names(change)}**, whose baselines use the sample itself "
              f"or rescale: for them the claim is false." if change else ".")
  out.append(verdict)
  out.append(_score_shift(b, others))
  return "\n".join(out)


# Claim 3.

def _percent(case):
  return f"{100 * case.stats.share.value:.1f}%"


def _credit_verdict(seq, tok):
  worst_tok = max(c.stats.share.value + Z_SIGNIFICANT * c.stats.share.se for c in tok)
  holds = all(c.stats.share.value - Z_SIGNIFICANT * c.stats.share.se > worst_tok for c in seq)
  return "**Verdict on the claim.** " + (
      "It holds: every sequence-level estimator puts more of its variance on the irrelevant "
      "tokens than any per-token estimator with the exact critic, beyond "
      f"{Z_SIGNIFICANT:g} standard errors." if holds else
      "**Not confirmed**: some sequence-level estimator does not put more variance on the "
      "irrelevant tokens than the per-token ones, beyond "
      f"{Z_SIGNIFICANT:g} standard errors.")


def claim_3_text(credit) -> str:
  """The variance share on the irrelevant tokens of the sequence-level estimators, of the
  per-token ones with the exact, noisy and learned critics, and the verdict."""
  cases = credit.cases
  seq = [c for c in cases if c.sequence_level and c.critic in (None, "exact")]
  tok = [c for c in cases if not c.sequence_level and c.critic in (None, "exact")]
  noisy = [c for c in cases if c.critic and c.critic.startswith("noisy")]
  learned = [c for c in cases if c.critic and c.critic.startswith("learned")]
  out = []
  if seq:
    shares = [c.stats.share.value for c in seq]
    out.append(f"The estimators whose advantage is the same at every token "
               f"({names([c.estimator for c in seq])}) put {100 * min(shares):.0f}–"
               f"{100 * max(shares):.0f}% of their gradient variance on θ[t ≥ "
               f"{NEEDLE_FIRST_IRRELEVANT}], where ∇J = 0.")
  if tok:
    out.append("Per token, with the exact critic: " + ", ".join(
        f"`{c.estimator}` {_percent(c)}" for c in tok) + ".")
  if noisy:
    out.append(f"With a noisy critic, `{credit.critic_user}`: " + ", ".join(
        f"{_percent(c)} ({c.critic})" for c in noisy) + ".")
  if learned:
    s = [c.stats.share for c in learned]
    falls = all(diff_z(b, a) < -Z_SIGNIFICANT for a, b in zip(s, s[1:]))
    out.append(f"With the learned critic, `{credit.critic_user}` puts " + ", ".join(
        f"{_percent(c)} at M = {c.critic.split('= ')[1]} (critic RMS error {c.critic_error:.3f})"
        for c in learned) +
        (": the share falls with every increase of M, as the critic improves." if falls else
         ": the share does not fall steadily with M."))
  if seq and tok:
    out.append(_credit_verdict(seq, tok))
  return "\n".join(out)


# Claim 4.

def _gradient_across_lambda(grad):
  biased_at = [lam for lam, s in zip(LAMBDAS, grad) if s.biased]
  unbiased_at = [lam for lam, s in zip(LAMBDAS, grad) if not s.biased]
  lams = lambda xs: ", ".join(f"{x:g}" for x in xs) or "none"
  if not biased_at:
    return "the gradient passes the z-test at every λ", False
  if not unbiased_at:
    return "the gradient fails the z-test at every λ", False
  trade = not grad[-1].biased and all(lam < min(unbiased_at) for lam in biased_at)
  return (f"the gradient fails the z-test at λ ∈ {{{lams(biased_at)}}} and passes it "
          f"at λ ∈ {{{lams(unbiased_at)}}}", trade)


def _lambda_sentence(sw):
  b_dir, b_text = trend([a.bias2 for a in sw.advantage], LAMBDAS, "the advantage's bias²")
  v_dir, v_text = trend([a.variance for a in sw.advantage], LAMBDAS, "its variance")
  grad_text, grad_trade = _gradient_across_lambda(sw.gradient)
  if sw.critic == "exact":
    zero = all(abs(a.bias2.value) <= Z_SIGNIFICANT * a.bias2.se + 1e-12 for a in sw.advantage)
    verdict = ("bias² is 0 within 3 standard errors at every λ" if zero else
               "**bias² is not 0 at every λ**") + "; only the variance moves"
  else:
    trade = b_dir == "falls" and v_dir == "rises"
    verdict = ("λ trades bias against variance here, as claimed" if trade else
               "**the advantage does not trade bias against variance here, unlike the "
               "claim**")
  grad_trade = grad_trade and sw.critic != "exact"
  return (f"- **{sw.critic} critic** (RMS error {sw.critic_error:.3f}): {b_text}; {v_text}. "
          f"{verdict}. For the policy, {grad_text}" +
          (": biased for small λ, unbiased at λ = 1, the gradient's bias falls as λ → 1."
           if grad_trade else "."))


def claim_4_text(sweeps) -> str:
  """One line per critic: how the advantage's bias² and variance move with λ, whether that is
  the claimed trade, and where the gradient passes claim 1's z-test."""
  return "\n".join(_lambda_sentence(sw) for sw in sweeps)


# Claim 5.

def fisher_pvalue(a, b, alternative="two-sided"):
  """Fisher's exact test of the collapse counts of two Cells."""
  table = [[a.collapsed, a.seeds - a.collapsed], [b.collapsed, b.seeds - b.collapsed]]
  return scipy_stats.fisher_exact(table, alternative=alternative).pvalue


def safe_rate(cells, loss, rates):
  """The largest rate up to which no seed of `loss` collapses (0 if one does at the first)."""
  upto = 0
  for lr in rates:
    if cells[(loss, lr)].collapsed:
      break
    upto = lr
  return upto


def _per_loss(cells, loss, rates, upto):
  counts = ", ".join(f"{cells[(loss, lr)].collapsed}/{cells[(loss, lr)].seeds}" for lr in rates)
  p = fisher_pvalue(cells[(loss, rates[-1])], cells[(loss, rates[0])], alternative="greater")
  keeps = (f"keeps every seed up to a learning rate of {upto:g}" if upto else
           "loses seeds already at the smallest rate")
  return (f"- `{loss}` {keeps} (collapsed seeds by rate {', '.join(f'{r:g}' for r in rates)}: "
          f"{counts}). " + (
              f"More seeds collapse at {rates[-1]:g} than at {rates[0]:g} (one-sided Fisher "
              f"exact p = {p:.2g}): the claim holds for `{loss}`." if p < 0.05 else
              f"**The collapse at {rates[-1]:g} is not significantly more frequent than at "
              f"{rates[0]:g}** (one-sided Fisher p = {p:.2g}): not confirmed for `{loss}`."))


def _ppo_against(cells, other, rates, safe):
  better, worse, same = [], [], []
  for lr in rates:
    a, b = cells[("ppo", lr)], cells[(other, lr)]
    p = fisher_pvalue(a, b)
    (better if a.collapsed < b.collapsed and p < 0.05 else
     worse if a.collapsed > b.collapsed and p < 0.05 else same).append((lr, p))
  fmt = lambda xs: ", ".join(f"{lr:g} (p = {p:.2g})" for lr, p in xs)
  parts = []
  if better:
    parts.append(f"`ppo` collapses in fewer seeds at {fmt(better)}")
  if worse:
    parts.append(f"in **more** seeds at {fmt(worse)}")
  if same:
    parts.append(f"the difference is not significant at {fmt(same)}")
  out = [f"- `ppo` against `{other}` at the same rate, by two-sided Fisher exact tests of the "
         f"collapse counts: " + "; ".join(parts) + "."]
  if not better:
    head = (f"- **With {cells[('ppo', rates[0])].seeds} seeds per cell, clipping collapses "
            f"significantly fewer seeds at no rate tried**")
    out.append(head + (
        f": `ppo` keeps every seed up to {safe['ppo']:g} against {safe[other]:g} for "
        f"`{other}`, but the counts at the rates between do not differ significantly."
        if safe["ppo"] > safe[other] else "."))
  return out


def claim_5_text(cells) -> str:
  """Per loss: the largest safe rate and a one-sided Fisher test of more collapse at the largest
  rate than at the smallest; then `ppo` against the other loss at each rate (two-sided)."""
  losses = sorted({k[0] for k in cells})
  rates = sorted({k[1] for k in cells})
  safe = {loss: safe_rate(cells, loss, rates) for loss in losses}
  out = [_per_loss(cells, loss, rates, safe[loss]) for loss in losses]
  if len(losses) == 2 and "ppo" in losses:
    out += _ppo_against(cells, [l for l in losses if l != "ppo"][0], rates, safe)
  return "\n".join(out)
