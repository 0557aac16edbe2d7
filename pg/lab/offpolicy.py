"""Stale samples, rollout correction and the new losses' on-policy claims, measured exactly.

Staleness. From the problem's θ_0 the learner takes S exact gradient-ascent steps,
θ_{s+1} = θ_s + η ∇J(θ_s)/‖∇J(θ_s)‖ (a fixed distance per update); it is at θ_S and its
samples come from the sampler of k updates ago, π_old = π_{θ_{S−k}}. The single-sample estimate

    g(y) = Σ_t w_t(y)·(r(y) − J(θ_S))·∇θ log π_θ(y_t | y_<t),   y ~ π_old,

with the weights w of a rollout correction (`pg.core.rollout_correction`, trainer = π_θ,
sampler = π_old), has, summing over every listed sequence with probability π_old(y), the exact
mean E g and trace of covariance tr Σ (one sample; n samples divide it by n). Reported: the
relative bias ‖E g − ∇J‖/‖∇J‖ and tr Σ against the on-policy estimator's. Nothing is sampled,
so the numbers carry no standard error.

On-policy claims. Each registered policy loss, at π_old = π_θ (ρ = 1), on the listed sequences
with variable lengths, advantages A = r − J per sequence and its own aggregation: the gradient
of the aggregated loss against REINFORCE's under the same aggregation (GSPO's claim: it is
sequence-mean-token-mean REINFORCE at s = 1; SAPO's: its gate has slope 1 at ρ = 1).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import pg
from pg.core import rollout_correction as rc
from pg.core import tabular
from pg.lab.problems import Problem, exact_gradient

STALENESS = (0, 1, 4, 16)
STEPS = 16                 # S: updates the learner has taken
STEP_SIZE = 0.5            # η: the distance of each normalised ascent step
CAP, LOW, HIGH = 2.0, 0.5, 2.0
# (label, rollout-correction mode, cap): "sequence IS" untruncated is the unbiased reference.
CORRECTIONS = (("none", "none", CAP), ("token TIS", "token_tis", CAP),
               ("sequence TIS", "sequence_tis", CAP), ("token MIS", "token_mis", CAP),
               ("sequence MIS", "sequence_mis", CAP), ("Geo-RS", "geo_rs", CAP),
               ("sequence IS (no cap)", "sequence_tis", 1e30))


class Cell(NamedTuple):
  bias: float        # ‖E g − ∇J‖ / ‖∇J‖
  trace: float       # tr Σ of one sample


class Staleness(NamedTuple):
  staleness: tuple   # k
  kl: dict           # k -> KL(π_old ‖ π_θ) in nats per sequence
  corrections: tuple  # labels
  cells: dict        # (label, k) -> Cell
  on_policy_trace: float


def trajectory(p: Problem, steps=STEPS, step_size=STEP_SIZE):
  """θ_0 … θ_steps of normalised exact gradient ascent on J."""
  thetas = [p.theta]
  for _ in range(steps):
    g = jax.grad(tabular.exact_expectation)(thetas[-1], p.seqs_NxT, p.scores_N)
    thetas.append(thetas[-1] + step_size * g / jnp.linalg.norm(g))
  return thetas


def _token_logp(theta, seqs_NxT):
  return pg.token_log_probs(tabular.logits(theta, seqs_NxT), seqs_NxT)


def corrected_moments(p: Problem, theta, old_theta, mode: str, cap=CAP, lo=LOW, hi=HIGH):
  """(E g `[D]`, tr Σ) of the module docstring's estimator, exactly, with π_θ's baseline J."""
  seqs = p.seqs_NxT
  mask = jnp.ones(seqs.shape, jnp.float32)
  old_logp = _token_logp(old_theta, seqs)
  q_N = jnp.exp(old_logp.sum(1))
  j = tabular.exact_expectation(theta, seqs, p.scores_N)
  weights, _ = rc.correction_weights(mode, _token_logp(theta, seqs), old_logp, mask, cap, lo, hi)
  adv_N = p.scores_N - j

  def per_sequence(th, n):
    logp_T = _token_logp(th, seqs[n][None])[0]
    return jnp.sum(weights[n] * adv_N[n] * logp_T)
  g_ND = jax.vmap(jax.grad(per_sequence), in_axes=(None, 0))(theta, jnp.arange(len(seqs)))
  g_ND = np.asarray(g_ND.reshape(len(seqs), -1), np.float64)
  q = np.asarray(q_N, np.float64)
  mean_D = q @ g_ND
  trace = float(q @ np.sum((g_ND - mean_D) ** 2, axis=1))
  return mean_D, trace


def staleness(p: Problem, staleness_values=STALENESS, corrections=CORRECTIONS) -> Staleness:
  thetas = trajectory(p, max(STEPS, max(staleness_values)))
  theta = thetas[-1]
  now = p._replace(theta=theta)
  exact = np.asarray(exact_gradient(now), np.float64)
  norm = np.linalg.norm(exact)
  _, on_trace = corrected_moments(p, theta, theta, "none")
  cells, kl = {}, {}
  logp_now = np.asarray(tabular.sequence_log_prob(theta, p.seqs_NxT), np.float64)
  for k in staleness_values:
    old = thetas[-1 - k]
    logp_old = np.asarray(tabular.sequence_log_prob(old, p.seqs_NxT), np.float64)
    kl[k] = float(np.exp(logp_old) @ (logp_old - logp_now))
    for label, mode, cap in corrections:
      mean_D, trace = corrected_moments(p, theta, old, mode, cap)
      cells[(label, k)] = Cell(float(np.linalg.norm(mean_D - exact) / norm), trace)
  return Staleness(tuple(staleness_values), kl, tuple(c[0] for c in corrections), cells,
                   on_trace)


# The new losses' on-policy claims.

class LossCheck(NamedTuple):
  loss: str
  aggregation: str
  relative_difference: float   # ‖∇L − ∇L_REINFORCE‖ / ‖∇L_REINFORCE‖, same aggregation


def on_policy_losses(p: Problem, names=None) -> tuple:
  """`LossCheck` for every registered policy loss (a fork's included), at ρ = 1."""
  seqs = p.seqs_NxT
  N, T = seqs.shape
  lengths = 1 + np.arange(N) % T
  mask = jnp.asarray(np.arange(T)[None] < lengths[:, None], jnp.float32)
  j = tabular.exact_expectation(p.theta, seqs, p.scores_N)
  adv = (p.scores_N - j)[:, None] * mask
  hp = pg.make_hparams()
  out = []
  for name in names or tuple(pg.POLICY_LOSSES):
    fn = pg.get_policy_loss(name)
    agg = fn.aggregation or pg.AGGREGATION_MODES[0]

    def total(theta, loss=fn):
      logp = _token_logp(theta, seqs)
      old = jax.lax.stop_gradient(logp)
      loss_BxT, _ = loss(pg.PolicyLossInputs(logp, old, adv, mask, jax.random.PRNGKey(0)), hp)
      return pg.aggregate_loss(loss_BxT, mask, agg)

    def reinforce(theta):
      return pg.aggregate_loss(pg.reinforce_token_surrogate(_token_logp(theta, seqs), adv, mask),
                               mask, agg)
    g = np.asarray(jax.grad(total)(p.theta)).ravel()
    ref = np.asarray(jax.grad(reinforce)(p.theta)).ravel()
    out.append(LossCheck(name, agg, float(np.linalg.norm(g - ref) / np.linalg.norm(ref))))
  return tuple(out)


# Tables and the sentences the measurements make.

UNBIASED = 1e-4     # exact numbers: a relative bias below this is float32 rounding
EQUAL = 1e-5        # and a relative gradient difference below this is equality


def staleness_table(s: Staleness) -> str:
  head = "| correction | " + " | ".join(f"k = {k}" for k in s.staleness) + " |"
  kl = "| KL(π_old ‖ π_θ), nats | " + " | ".join(f"{s.kl[k]:.3f}" for k in s.staleness) + " |"
  rows = [head, "|---|" + "---|" * len(s.staleness), kl]
  for label in s.corrections:
    cells = [s.cells[(label, k)] for k in s.staleness]
    rows.append(f"| {label} | " + " | ".join(
        f"{c.bias:.3f} / {c.trace / s.on_policy_trace:.2f}" for c in cells) + " |")
  return "\n".join(rows)


def staleness_text(s: Staleness) -> str:
  k_max = max(s.staleness)
  stale = [k for k in s.staleness if k > 0]
  always = [c for c in s.corrections
            if all(s.cells[(c, k)].bias < UNBIASED for k in stale)]
  parts = [f"With samples drawn k updates late, only {_names(always)} "
           f"{'is' if len(always) == 1 else 'are'} unbiased at every k measured "
           f"(relative bias below {UNBIASED:g}; KL(π_old ‖ π_θ) reaches {s.kl[k_max]:.2f} nats "
           f"at k = {k_max})."]
  none = [s.cells[("none", k)].bias for k in stale]
  parts.append(f"Uncorrected, the relative bias grows from {none[0]:.3f} at k = {stale[0]} to "
               f"{none[-1]:.3f} at k = {k_max}.")
  at_max = sorted(((s.cells[(c, k_max)].bias, c) for c in s.corrections if c != "none"))
  parts.append(f"At k = {k_max}: " + "; ".join(
      f"{c} {b:.3f} at {s.cells[(c, k_max)].trace / s.on_policy_trace:.2f}× the on-policy "
      f"variance" for b, c in at_max) + ".")
  return " ".join(parts)


def losses_table(checks) -> str:
  rows = ["| loss | aggregation | ‖∇L − ∇L_REINFORCE‖ / ‖∇L_REINFORCE‖ at ρ = 1 |",
          "|---|---|---|"]
  rows += [f"| `{c.loss}` | {c.aggregation} | {c.relative_difference:.2e} |" for c in checks]
  return "\n".join(rows)


def losses_text(checks) -> str:
  same = [c.loss for c in checks if c.relative_difference < EQUAL]
  other = [c for c in checks if c.relative_difference >= EQUAL]
  text = (f"On-policy (ρ = 1), {_names(same)} give REINFORCE's gradient under their own "
          f"aggregation (relative difference below {EQUAL:g})")
  seq = [c.loss for c in checks if c.loss in same and c.aggregation == "seq-mean-token-mean"]
  if seq:
    text += f"; {_names(seq)} under sequence-mean-token-mean"
  text += "."
  if other:
    text += " " + "; ".join(f"`{c.loss}` differs by {c.relative_difference:.3f}"
                            for c in other) + "."
  return text


def _names(xs):
  xs = [f"`{x}`" if not x[0].isupper() and " " not in x else x for x in xs]
  if not xs:
    return "none"
  return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]
