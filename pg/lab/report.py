"""The estimator lab's report: the measurements of `pg.lab.claims` as tables, a figure and the
prose of `report_template.md` (a `string.Template`), with the sentences of `pg.lab.findings`.

`write(workdir, ...)` measures and writes report.md and bias_vs_samples.png into `workdir`;
`publish(workdir, report_dir)` copies them over a committed report.
"""

from __future__ import annotations

import os
import shutil
import string
import time
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pg.lab import claims, findings, offpolicy, problems  # noqa: E402
from pg.lab.claims import GROUP_SIZE, LAMBDAS, NEEDLE_FIRST_IRRELEVANT, OFFSET  # noqa: E402
from pg.lab.estimates import needs_values  # noqa: E402
from pg.lab.findings import names, pm  # noqa: E402
from pg.lab.statistics import NUM_BATCHES  # noqa: E402
from pg.run.tables import markdown_table  # noqa: E402

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "report_template.md")
REPORT, FIGURE = "report.md", "bias_vs_samples.png"
DEFAULT_SIZES = (1000, 4000, 16000, 64000)  # N of claims 1 and 2


# Tables.

def _verdict(s):
  return "**biased**" if s.biased else "unbiased"


def _ratio_cell(b, name, ratio, digits=3):
  return "1 (reference)" if name == b.reference else pm(ratio, digits)


def main_table(b) -> str:
  """Claims 1 and 2 at the largest N: scale, z-test verdict, SNR, variance reduction."""
  top = b.top
  rows = [[f"`{n}`", pm(top[n].scale), _verdict(top[n]), pm(top[n].snr, 4),
           _ratio_cell(b, n, b.ratio[n])] for n in b.estimators]
  return markdown_table(["estimator", "scale along ∇J (1 = unbiased)", "verdict (z-test)",
                         "SNR ‖∇J‖²/tr Σ", f"tr Σ_{b.reference} / tr Σ"], rows)


def claim_1_tables(b):
  """The relative bias and the cosine by N, and the z-tests at the largest N."""
  by_n_header = ["estimator"] + [f"N = {m:,}" for m in b.sizes]
  bias = markdown_table(by_n_header, [[f"`{n}`"] + [pm(b.by_n[n][m].relative_bias)
                                                    for m in b.sizes] for n in b.estimators])
  cosine = markdown_table(by_n_header, [[f"`{n}`"] + [pm(b.by_n[n][m].cosine, 4)
                                                      for m in b.sizes] for n in b.estimators])
  rows = [[f"`{n}`", pm(s.scale), f"{s.max_abs_z:.1f}", _verdict(s),
           f"{s.max_abs_z_direction:.1f}", "**turned**" if s.turned else "along ∇J"]
          for n, s in b.top.items()]
  test = markdown_table(["estimator", "scale along ∇J (1 = unbiased)", "max abs z, mean ĝ − ∇J",
                         "verdict", "max abs z, orthogonal part", "direction"], rows)
  return bias, cosine, test


def claim_2_table(b) -> str:
  """Variance, SNRs and reductions at the largest N, and the same with scores + OFFSET."""
  rows = []
  for n, s in b.top.items():
    rows.append([f"`{n}`", pm(s.variance, 4), pm(s.snr, 4), pm(s.own_snr, 4),
                 _ratio_cell(b, n, b.ratio[n]), pm(b.shifted[n].variance, 4),
                 _ratio_cell(b, n, b.ratio_shifted[n], 2), pm(b.growth[n])])
  ref = b.reference
  return markdown_table(
      ["estimator", "tr Σ per estimate", "SNR ‖∇J‖²/tr Σ", "‖mean ĝ‖²/tr Σ", f"tr Σ_{ref} / tr Σ",
       f"tr Σ, scores + {OFFSET:g}", f"tr Σ_{ref} / tr Σ, scores + {OFFSET:g}",
       f"tr Σ(+{OFFSET:g}) / tr Σ (same samples)"], rows)


def claim_3_table(credit) -> str:
  """Per estimator and critic: the variance on the relevant and the irrelevant tokens."""
  rows = [[f"`{c.estimator}`", c.critic or "—",
           "—" if c.critic_error is None else f"{c.critic_error:.4f}",
           "yes" if c.sequence_level else "no", pm(c.stats.relevant, 4),
           pm(c.stats.irrelevant, 4),
           f"{100 * c.stats.share.value:.1f}% ± {100 * c.stats.share.se:.1f}%"]
          for c in credit.cases]
  return markdown_table(
      ["estimator", "critic", "critic RMS error (exact)", "same advantage at every token",
       f"variance on θ[t < {NEEDLE_FIRST_IRRELEVANT}] (relevant)",
       f"variance on θ[t ≥ {NEEDLE_FIRST_IRRELEVANT}] (irrelevant)", "share on irrelevant"], rows)


def claim_4_table(sweeps) -> str:
  """Per critic and λ: the advantage's bias² and variance, the gradient's bias and variance."""
  rows = [[sw.critic, f"{sw.critic_error:.4f}", f"{lam:g}", pm(a.bias2, 4), pm(a.variance, 4),
           pm(s.relative_bias), pm(s.variance, 4), f"{s.max_abs_z:.1f}", _verdict(s)]
          for sw in sweeps for lam, a, s in zip(LAMBDAS, sw.advantage, sw.gradient)]
  return markdown_table(["critic", "critic RMS error (exact)", "λ", "advantage bias²",
                         "advantage variance", "gradient rel. bias", "gradient tr Σ",
                         "max abs z", "gradient verdict"], rows)


def claim_5_table(cells) -> str:
  """Per loss and learning rate: the final score ± its SE over seeds, and the collapse count
  ± its binomial SE √(S p (1 − p))."""
  rows = []
  for (loss, lr), c in cells.items():
    rate = c.collapsed / c.seeds
    rows.append([loss, f"{lr:g}", f"{c.final_S.mean():.3f} ± "
                 f"{c.final_S.std(ddof=1) / np.sqrt(c.seeds):.3f}",
                 f"{c.collapsed}/{c.seeds} ± {np.sqrt(c.seeds * rate * (1 - rate)):.1f}"])
  return markdown_table(["loss", "learning rate", "final score (± SE over seeds)",
                         "collapsed (final < its start; ± binomial SE)"], rows)


# The figure.

def plot_bias(b, path) -> str:
  """Relative bias ± SE against N per estimator, with the noise floor of an unbiased one."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, (name, stats) in enumerate(b.by_n.items()):
    s = [stats[n] for n in b.sizes]
    ax.errorbar(b.sizes, [x.relative_bias.value for x in s],
                yerr=[x.relative_bias.se for x in s], fmt="o-", color=f"C{i % 10}", label=name,
                capsize=2)
    ax.plot(b.sizes, [x.noise_floor for x in s], ":", color=f"C{i % 10}", lw=1)
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


# The report.

def _not_measured(failed) -> str:
  if not failed:
    return ""
  return ("\n\nNot measured (the estimator fails on this problem): " +
          "; ".join(f"`{n}`: {e}" for n, e in failed.items()) + ".")


def _sweep_where(collapse) -> str:
  if collapse.workdir:
    return f"in `{collapse.workdir}`, keyed by a hash of its config"
  return "run in a fresh temporary folder"


def fields(m: claims.Measurements, elapsed: float) -> dict:
  """The template's fields: every `${name}` of report_template.md."""
  b, p, needle, c5 = m.bias, m.problem, m.credit.problem, m.collapse.config
  t1_bias, t1_cos, t1_test = claim_1_tables(b)
  exact_D = np.asarray(problems.exact_gradient(p))
  return dict(
      estimators=names(b.estimators),
      critics=names([n for n in b.estimators if needs_values(n)]),
      not_measured=_not_measured(m.failed),
      vocab_size=p.vocab_size, length=p.length, num_sequences=p.vocab_size ** p.length,
      group_size=GROUP_SIZE, num_nonzero=int(np.sum(np.abs(exact_D) > 0)), seed=m.seed,
      num_batches=NUM_BATCHES, num_estimates=f"{b.sizes[-1]:,}", main_table=main_table(b),
      table_1_bias=t1_bias, table_1_cosine=t1_cos, table_1_test=t1_test,
      z_threshold=f"{b.top[b.estimators[0]].z_threshold:.2f}", text_1=findings.claim_1_text(b),
      reference=b.reference, offset=f"{OFFSET:g}", table_2=claim_2_table(b),
      text_2=findings.claim_2_text(b),
      needle_vocab_size=needle.vocab_size, needle_length=needle.length,
      needle_sequences=needle.vocab_size ** needle.length,
      first_irrelevant=NEEDLE_FIRST_IRRELEVANT,
      needle_norms=", ".join(f"{x:.3f}" for x in m.credit.norms_T),
      num_groups=f"{m.num_groups:,}", table_3=claim_3_table(m.credit),
      text_3=findings.claim_3_text(m.credit),
      claim_4_critic_size=claims.CLAIM_4_CRITIC_SIZE, table_4=claim_4_table(m.lambdas),
      text_4=findings.claim_4_text(m.lambdas),
      ppo_epochs=c5.ppo_epochs, num_minibatches=c5.num_minibatches, seeds=c5.num_seeds,
      last_seed=c5.num_seeds - 1, num_updates=c5.updates_per_chunk * c5.num_chunks,
      num_prompts=c5.num_prompts, claim_5_group_size=c5.group_size,
      sweep_where=_sweep_where(m.collapse), table_5=claim_5_table(m.collapse.cells),
      text_5=findings.claim_5_text(m.collapse.cells),
      staleness_steps=offpolicy.STEPS, staleness_step_size=f"{offpolicy.STEP_SIZE:g}",
      staleness_cap=f"{offpolicy.CAP:g}", staleness_band=f"[{offpolicy.LOW:g}, {offpolicy.HIGH:g}]",
      staleness_table=offpolicy.staleness_table(m.staleness),
      staleness_text=offpolicy.staleness_text(m.staleness),
      losses=names(tuple(c.loss for c in m.losses)),
      losses_table=offpolicy.losses_table(m.losses), losses_text=offpolicy.losses_text(m.losses),
      elapsed=f"{elapsed:.0f}", cpus=os.cpu_count())


def template() -> string.Template:
  with open(TEMPLATE, encoding="utf-8") as f:
    return string.Template(f.read())


def render(m: claims.Measurements, elapsed: float) -> str:
  """The report's markdown (`substitute` refuses a field the template lacks a value for)."""
  return template().substitute(fields(m, elapsed))


def write(workdir: str, seed: int = 0, sizes=DEFAULT_SIZES, seeds: int = 16,
          sweep_workdir: Optional[str] = None, started: Optional[float] = None) -> str:
  """Measures the five claims (`claims.measure`) and writes REPORT and FIGURE into `workdir`;
  the runtime the report states counts from `started` (default: now). Returns REPORT's path."""
  started = time.time() if started is None else started
  os.makedirs(workdir, exist_ok=True)
  m = claims.measure(seed, sizes, seeds, sweep_workdir)
  plot_bias(m.bias, os.path.join(workdir, FIGURE))
  path = os.path.join(workdir, REPORT)
  with open(path, "w", encoding="utf-8") as f:
    f.write(render(m, time.time() - started))
  return path


def publish(workdir: str, report_dir: str) -> list:
  """Copies REPORT and FIGURE from `workdir` over those in `report_dir`; their new paths."""
  os.makedirs(report_dir, exist_ok=True)
  out = []
  for name in (REPORT, FIGURE):
    src, dst = os.path.join(workdir, name), os.path.join(report_dir, name)
    if os.path.abspath(src) != os.path.abspath(dst):
      shutil.copyfile(src, dst)
    out.append(dst)
  return out
