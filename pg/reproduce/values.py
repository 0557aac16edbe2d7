"""The strings that the README's and the configs' marked numbers hold, derived from results.json.

`derive(results)` maps a key (`default.last10`, `rlhf.conclusion`, ...) to its text. Scores are
'mean ± half-width of the 95% t-interval across seeds'; comparisons name Welch's t-test over
the per-seed values, and the sentences that draw a conclusion are built from those tests, so a
rerun restates its own numbers and never contradicts them.
"""

from __future__ import annotations

from pg.reproduce import stats
from pg.reproduce.groups import BY_NAME, THRESHOLD
from pg.run.tables import markdown_table

# (group, reference group): the score over the last 10% of updates compared.
COMPARISONS = (("reinforce", "default"), ("reinforce_ma", "default"))


def derive(results: dict) -> dict:
  """Every marker's text from the `results` entries present."""
  out = {}
  for name, entry in results.items():
    out[f"{name}.seeds"] = str(entry["seeds"])
    out[f"{name}.wall"] = stats.wall(entry["wall_s"])
    for field in ("metrics", "settings", "betas", "estimators", "main_table", "rows"):
      if field in entry:
        out.update(DERIVE[field](name, entry))
        break
  if results:
    out["total.wall"] = stats.wall(sum(e["wall_s"] for n, e in results.items()
                                       if BY_NAME[n].default))
  for name, ref in COMPARISONS:
    if name in results and ref in results:
      verdict, p = stats.compare(results[name]["metrics"]["mean_score"]["last10"],
                                 results[ref]["metrics"]["mean_score"]["last10"])
      out[f"{name}.vs_{ref}"] = f"{verdict}, {stats.p_text(p)}"
  return out


def _train(name, entry):
  out = {}
  for metric, w in entry["metrics"].items():
    prefix = name if metric == "mean_score" else f"{name}.{metric}"
    for window, s in w.items():
      out[f"{prefix}.{window}"] = stats.pm(s)
  out[f"{name}.per_seed"] = ", ".join(f"{v:.2f}" for v in
                                      entry["metrics"]["mean_score"]["last10"]["per_seed"])
  first = entry.get(f"updates_to_{THRESHOLD:g}")
  if first is not None:
    out[f"{name}.updates_to_{THRESHOLD:g}"] = (
        f"by update {max(first)} in every seed" if all(u is not None for u in first) else
        f"in {sum(u is not None for u in first)} of {len(first)} seeds")
  return out


def _fmt(v):
  return f"{v:g}" if isinstance(v, float) else str(v)


def _sweep(name, entry):
  """Per structural value (the advantage), its best setting by the last-10% score."""
  out = {}
  settings = entry["settings"]
  keys = sorted({k for s in settings for k in s["values"]})
  structural = [k for k in keys if not isinstance(settings[0]["values"][k], float)]
  by = {}
  for s in settings:
    by.setdefault(tuple(s["values"][k] for k in structural), []).append(s)
  for group, members in by.items():
    best = max(members, key=lambda s: s["metrics"]["mean_score"]["last10"]["mean"])
    where = ", ".join(f"{k} {_fmt(v)}" for k, v in best["values"].items() if k not in structural)
    label = ".".join(str(g) for g in group) or "all"
    out[f"{name}.{label}.best"] = f"{stats.pm(best['metrics']['mean_score']['last10'])} at {where}"
  return out


def _beta(b):
  return f"{b['kl_coef']:g}"


def _rlhf(name, entry):
  out = {}
  betas = entry["betas"]
  reward, prefs = entry["stages"]["reward"], entry["stages"]["preferences"]
  out[f"{name}.rm_accuracy_gold"] = (
      f"{100 * reward['held-out accuracy vs gold scores (pairs that differ)']:.0f}%")
  out[f"{name}.rm_accuracy_labels"] = f"{100 * reward['held-out accuracy vs gold labels']:.0f}%"
  out[f"{name}.tied_pairs"] = f"{100 * (1 - prefs['pairs whose gold scores differ']):.0f}%"
  out[f"{name}.ref_gold"] = f"{prefs['gold score of π_ref samples (mean)']:.2f}"
  last = lambda b, k: b["metrics"][k]["last10"]
  rows = []
  for b in betas:
    cells = [stats.pm(last(b, "gold_score")), stats.pm(last(b, "mean_score"), 1),
             stats.pm(last(b, "kl_to_ref"), 0)]
    for key, cell in zip(("gold", "proxy", "kl"), cells):
      out[f"{name}.beta_{_beta(b)}.{key}"] = cell
    rows.append([f"{_beta(b)}"] + cells)
  out[f"{name}.table"] = markdown_table(
      ["β", "gold score (VADER)", "proxy score (reward model)", "KL to π_ref (nats)"], rows)
  out[f"{name}.after_rl"] = "; ".join(
      f"β = {_beta(b)}: {last(b, 'gold_score')['mean']:.2f} / {last(b, 'mean_score')['mean']:.1f}"
      f" / {last(b, 'kl_to_ref')['mean']:.0f}" for b in betas)
  out[f"{name}.conclusion"] = rlhf_conclusion(betas, entry["seeds"])
  return out


def rlhf_conclusion(betas, seeds) -> str:
  """Whether the weakest penalty over-optimises: its proxy above and its gold below the
  strongest's, each by Welch's test over the seeds."""
  weak, strong = betas[0], betas[-1]
  last = lambda b, k: b["metrics"][k]["last10"]
  proxy, p_proxy = stats.compare(last(weak, "mean_score"), last(strong, "mean_score"))
  gold, p_gold = stats.compare(last(weak, "gold_score"), last(strong, "gold_score"))
  kl, p_kl = stats.compare(last(weak, "kl_to_ref"), last(strong, "kl_to_ref"))
  head = (f"With {seeds} seeds per β, against β = {_beta(strong)}, β = {_beta(weak)} ends with "
          f"a KL to π_ref that is {kl} ({stats.p_text(p_kl)}), a proxy score that is {proxy} "
          f"({stats.p_text(p_proxy)}) and a gold score that is {gold} ({stats.p_text(p_gold)}; "
          f"Welch's t-tests over the seeds' last 10% of updates)")
  if proxy == "higher" and gold == "lower":
    return head + (": the proxy rewards what the gold scorer does not, the over-optimisation "
                   "of Gao et al. (2022).")
  if gold == "not significantly different":
    return head + ": these runs show no significant over-optimisation of the gold score."
  return head + (": the weaker penalty does not over-optimise here; the gold score "
                 f"{'rises' if gold == 'higher' else 'falls'} with it.")


def _demo(name, entry):
  return {f"{name}.max_J": f"{entry['max_J']:.3f}"} | {
      f"{name}.{est}.last10": stats.pm(m["exact_J"]["last10"], 3)
      for est, m in entry["estimators"].items()}


def _lab(name, entry):
  return {f"{name}.main_table": entry["main_table"], f"{name}.brief": entry["brief"],
          f"{name}.estimates": f"{entry['estimates']:,}"}


def _bench(name, entry):
  out = {f"{name}.peak": f"{entry['peak_gflops']:.0f}"}
  for r in entry["rows"]:
    out[f"{name}.seeds_{r['seeds']}.s_per_update"] = f"{r['s/update']:.3f}"
    out[f"{name}.seeds_{r['seeds']}.tokens_per_s"] = f"{r['tokens/s']:,.0f}"
    out[f"{name}.seeds_{r['seeds']}.percent_of_peak"] = f"{r['% of peak']:.0f}"
  return out


DERIVE = {"metrics": _train, "settings": _sweep, "betas": _rlhf, "estimators": _demo,
          "main_table": _lab, "rows": _bench}
