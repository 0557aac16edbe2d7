"""Held-out evaluation during training: greedy accuracy, mean@n, unbiased pass@k and maj@n on a
task's held-out set (`Task.heldout`), for every run, at update 0, every `config.eval_every`
updates and at the end.

    evaluator = Evaluator(config, task, policy)      # compiles on first use
    rows = evaluator(params_R, update, labels)       # one dict per run; also written to disk

With LoRA, `params_R` are the runs' adapters and `Evaluator(..., base=init.base)` the shared
frozen base they sit on.

For each held-out problem: one greedy response and `config.eval_samples` = n sampled ones at
`config.eval_temperature`, decoded and judged by the task's verifier. Problem e draws with key
fold_in(eval key, e) (the same at every evaluation: the curve compares models, not draws), in
compiled batches of `config.eval_batch` problems, vmapped over runs.

Each score is the mean over problems with the half-width of its 95% t-interval over problems
(`pg.core.evaluation`); the scores go to `eval.jsonl` (one row per run and evaluation, the
half-widths as `<name>_ci95`), TensorBoard (tags `heldout/<name>`, "@" as "_at_"), the curves
figure and the final table; each evaluation's per-problem results and responses to
`eval/update_<u>.json`.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from pg.core import evaluation as estimators
from pg.policy import lora, sampler
from pg.run.metrics_log import atomic_write
from pg.text.batch import response_ids

PREFIX = "heldout_"
EVAL_KEY = 20251  # the held-out draws' key: fixed, so every evaluation sees the same draws


def check_config(config, task) -> None:
  """Refuses evaluation fields that do not fit (before anything compiles)."""
  every = config.get("eval_every", 0)
  if not isinstance(every, int) or every < 0:
    raise ValueError(f"config.eval_every must be an int >= 0 (updates; 0: no evaluation), got "
                     f"{every!r}.")
  if not every:
    return
  if task.heldout is None or task.heldout.size == 0:
    raise ValueError(f"config.eval_every = {every}, but task {task.name!r} has no held-out set "
                     f"(set config.eval_every = 0, or use a text task with num_heldout > 0).")
  if every % config.updates_per_chunk:
    raise ValueError(f"config.eval_every ({every}) must be a multiple of "
                     f"config.updates_per_chunk ({config.updates_per_chunk}): evaluation runs "
                     f"between compiled chunks.")
  for name, lo in (("eval_samples", 0), ("eval_batch", 1), ("eval_size", 0)):
    value = config.get(name)
    if not isinstance(value, int) or value < lo:
      raise ValueError(f"config.{name} must be an int >= {lo}, got {value!r}.")
  if not config.eval_temperature > 0:
    raise ValueError(f"config.eval_temperature must be > 0, got {config.eval_temperature!r}.")


def due(config, update: int, total: int) -> bool:
  """Whether the evaluation runs after `update` updates (0, every eval_every, the last)."""
  every = config.get("eval_every", 0)
  return bool(every) and (update % every == 0 or update == total)


class Evaluator:
  """Evaluates the runs' params on `task.heldout` (see the module docstring)."""

  def __init__(self, config, task, policy, workdir: str | None = None, verbose: bool = True,
               base=None):
    held = task.heldout
    E = held.size if not config.eval_size else min(config.eval_size, held.size)
    self.task, self.E, self.n = task, E, config.eval_samples
    self.workdir, self.verbose = workdir, verbose
    self.batch = min(config.eval_batch, E)
    self.prompts_ExP = np.asarray(held.prompts_ExP[:E])
    self.references = held.references[:E]
    self.questions = [_question(e.prompt) for e in held.examples[:E]] or [""] * E
    self.judge = held.judge
    T, n = task.max_new_tokens, self.n
    temperature = float(config.eval_temperature)

    def generate(params, base, prompts_NxP, keys_N):
      if base is not None:  # LoRA: the run's adapters on the shared base
        params = lora.combine(base, params)
      mask = task.prompt_mask(prompts_NxP)
      common = dict(max_new_tokens=T, eos_id=task.eos_id, pad_id=task.pad_id,
                    prompt_mask_NxP=mask, eos_ids=task.eos_ids, temperature=temperature)
      g = sampler.sample(policy, params, prompts_NxP, keys_N, greedy=True, **common)
      out = {"greedy": g.tokens_BxT, "greedy_mask": g.mask_BxT}
      if n:
        keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys_N)
        s = sampler.sample(policy, params, prompts_NxP, keys, group_size=n, **common)
        out.update(samples=s.tokens_BxT, samples_mask=s.mask_BxT)
      return out

    self.base = base
    self._generate = jax.jit(jax.vmap(generate, in_axes=(0, None, None, None)))
    self.keys_E = jax.vmap(lambda e: jax.random.fold_in(jax.random.PRNGKey(EVAL_KEY), e))(
        jnp.arange(E))

  def responses(self, params_R):
    """Decoded responses: (greedy [R][E], samples [R][E][n], truncated [R][E][1 + n]). Runs
    whose params are all the same (every seed at update 0 of a pretrained model) are generated
    once: the draws use the same keys, so the responses would be the same."""
    R = jax.tree_util.tree_leaves(params_R)[0].shape[0]
    if R > 1 and identical_runs(params_R):
      greedy, samples, truncated = self.responses(
          jax.tree_util.tree_map(lambda x: x[:1], params_R))
      return greedy * R, samples * R, np.repeat(truncated, R, axis=0)
    greedy = [[None] * self.E for _ in range(R)]
    samples = [[[None] * self.n for _ in range(self.E)] for _ in range(R)]
    truncated = np.zeros((R, self.E, 1 + self.n), bool)
    bar = tqdm(total=self.E, desc="held-out", unit="problem", leave=False,
               disable=not self.verbose)
    for start in range(0, self.E, self.batch):
      idx = np.arange(start, start + self.batch) % self.E  # the last batch wraps: one shape
      out = jax.device_get(self._generate(params_R, self.base,
                                          jnp.asarray(self.prompts_ExP[idx]), self.keys_E[idx]))
      for j, e in enumerate(idx[:min(self.batch, self.E - start)]):
        for r in range(R):
          greedy[r][e], truncated[r, e, 0] = self._decode(out["greedy"][r, j],
                                                          out["greedy_mask"][r, j])
          for k in range(self.n):
            row = j * self.n + k
            samples[r][e][k], truncated[r, e, 1 + k] = self._decode(
                out["samples"][r, row], out["samples_mask"][r, row])
      bar.update(min(self.batch, self.E - start))
    bar.close()
    return greedy, samples, truncated

  def _decode(self, tokens_T, mask_T):
    """(text up to the end token, truncated: no end token within max_new_tokens)."""
    ids, ended = response_ids(tokens_T, mask_T, set(self.task.stop_ids))
    return self.task.decode(ids), not ended

  def __call__(self, params_R, update: int, labels) -> list[dict]:
    """One evaluation of every run: its scores (one dict per run) and per-problem details,
    written under the workdir when it has one."""
    greedy, samples, truncated = self.responses(params_R)
    rows, details = [], []
    for r, label in enumerate(labels):
      g_judged = [self.judge(text, ref) for text, ref in zip(greedy[r], self.references)]
      s_judged = [[self.judge(text, ref) for text in texts]
                  for texts, ref in zip(samples[r], self.references)]
      correct_ExN = np.array([[ok for _, ok in row] for row in s_judged], float).reshape(
          self.E, self.n)
      answers = [[a for a, _ in row] for row in s_judged]
      scores = estimators.summarize(correct_ExN, answers, [ok for _, ok in g_judged])
      found = [a is not None for a, _ in g_judged] + [a is not None for row in answers
                                                       for a in row]
      scores["truncated"] = estimators.mean_and_half_width(truncated[r].reshape(-1))
      scores["no_answer"] = estimators.mean_and_half_width(1.0 - np.array(found, float))
      row = {"run": r, **label, "update": int(update)}
      for name, (mean, half) in scores.items():
        row[PREFIX + name], row[f"{PREFIX}{name}_ci95"] = mean, half
      rows.append(row)
      details.append({"run": r, **label, "problems": [
          {"prompt": self.questions[e], "reference": ref, "greedy": text, "greedy_answer": a,
           "greedy_correct": bool(ok), "samples": samples[r][e],
           "samples_correct": [bool(ok) for _, ok in s_judged[e]]}
          for e, (ref, text, (a, ok)) in enumerate(zip(self.references, greedy[r], g_judged))]})
    if self.workdir:
      write(self.workdir, update, rows, details)
    return rows


def one_line(rows, update: int) -> str:
  """'held-out at update 20: greedy 0.41, pass@1 0.38, ... (mean of 2 runs)'."""
  names = [k for k in rows[0] if k.startswith(PREFIX) and not k.endswith("_ci95")]
  parts = [f"{k[len(PREFIX):]} {np.nanmean([np.nan if r[k] is None else r[k] for r in rows]):.3f}"
           for k in names]
  return (f"held-out at update {update}: {', '.join(parts)} (mean of {len(rows)} "
          f"run{'s' if len(rows) != 1 else ''})")


def _question(prompt) -> str:
  """A held-out prompt as text: a string, or its chat's last user message."""
  if isinstance(prompt, str):
    return prompt
  users = [m["content"] for m in prompt if m.get("role") == "user"]
  return users[-1] if users else str(prompt)


def identical_runs(params_R) -> bool:
  """Whether every run's params equal run 0's, bit for bit."""
  for leaf in jax.tree_util.tree_leaves(params_R):
    x = np.asarray(jax.device_get(leaf))
    if not all(np.array_equal(x[0], x[r]) for r in range(1, x.shape[0])):
      return False
  return True


def eval_path(workdir) -> str:
  return os.path.join(workdir, "eval.jsonl")


def write(workdir, update, rows, details) -> None:
  """Appends `rows` to eval.jsonl (replacing any earlier rows of this update) and writes the
  per-problem details to eval/update_<u>.json."""
  kept = [r for r in read(workdir) if r["update"] != update]
  atomic_write(eval_path(workdir), "".join(json.dumps(_finite(r)) + "\n" for r in kept + rows))
  os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
  atomic_write(os.path.join(workdir, "eval", f"update_{update:06d}.json"),
               json.dumps({"update": update, "runs": details}, indent=1))


def read(workdir, keep_updates_up_to: int | None = None) -> list[dict]:
  """eval.jsonl's rows (in update order), those after `keep_updates_up_to` dropped."""
  path = eval_path(workdir)
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      if keep_updates_up_to is None or row["update"] <= keep_updates_up_to:
        rows.append(row)
  return sorted(rows, key=lambda r: (r["update"], r["run"]))


def truncate(workdir, keep_updates_up_to: int) -> list[dict]:
  """Drops evaluations after the resumed checkpoint (a rerun evaluates them again)."""
  rows = read(workdir, keep_updates_up_to)
  if os.path.exists(eval_path(workdir)):
    atomic_write(eval_path(workdir), "".join(json.dumps(r) + "\n" for r in rows))
  return rows


def curves(rows, num_runs: int) -> tuple[np.ndarray, dict]:
  """(updates [U], {metric: [R, U]}) from eval.jsonl rows (NaN where a run has no value)."""
  updates = sorted({r["update"] for r in rows})
  names = sorted({k for r in rows for k in r if k.startswith(PREFIX) and
                  not k.endswith("_ci95")})
  out = {k: np.full((num_runs, len(updates)), np.nan) for k in names}
  at = {u: i for i, u in enumerate(updates)}
  for row in rows:
    for k in names:
      v = row.get(k)
      if v is not None and row["run"] < num_runs:
        out[k][row["run"], at[row["update"]]] = v
  return np.array(updates), out


def _finite(row: dict) -> dict:
  return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}


def _details(workdir, update):
  path = os.path.join(workdir, "eval", f"update_{update:06d}.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return {d["run"]: d for d in json.load(f)["runs"]}


def _per_problem(run_details, metric: str):
  """Per-problem scores of one run for the metrics with per-problem details (greedy, mean@n)."""
  problems = run_details["problems"]
  if metric == "greedy":
    return np.array([p["greedy_correct"] for p in problems], float)
  return np.array([np.mean(p["samples_correct"]) if p["samples_correct"] else np.nan
                   for p in problems], float)


def summary_table(workdir, labels) -> str:
  """Markdown: each held-out score at the first and the last evaluation (mean ± 95% t-interval
  across seeds) and its change; for greedy and mean@n also each seed's paired change over the
  same problems (± its 95% t-interval over problems). '' when nothing was evaluated."""
  from pg.run.plotting import format_stat, mean_and_ci  # pg.run.plotting imports pyplot
  from pg.run.tables import markdown_table
  rows = read(workdir)
  if not rows:
    return ""
  updates, curves_ = curves(rows, len(labels))
  first, last = 0, len(updates) - 1
  d_first, d_last = _details(workdir, int(updates[first])), _details(workdir, int(updates[last]))
  table = []
  for name, x_RxU in curves_.items():
    short = name[len(PREFIX):]
    cells = []
    for x_R in (x_RxU[:, first], x_RxU[:, last], x_RxU[:, last] - x_RxU[:, first]):
      mean, half = mean_and_ci(x_R[:, None])
      n = int(np.sum(np.isfinite(x_R)))
      cells.append(format_stat(mean[0], half[0], n, len(x_R)))
    paired = "—"
    if d_first and d_last and (short == "greedy" or short.startswith("mean@")):
      parts = []
      for r in range(len(labels)):
        if r in d_first and r in d_last:
          diff = _per_problem(d_last[r], short) - _per_problem(d_first[r], short)
          m, h = estimators.mean_and_half_width(diff[np.isfinite(diff)])
          parts.append(f"{m:+.3f} ± {h:.3f}")
      paired = "; ".join(parts)
    table.append([short] + cells + [paired])
  header = ["held-out", f"update {int(updates[first])}", f"update {int(updates[last])}",
            "change", "change per seed, paired over problems"]
  E = len(next(iter(d_first.values()))["problems"]) if d_first else "?"
  return (markdown_table(header, table) + f"\n\n{len(labels)} seeds, {E} held-out problems; "
          f"± is a 95% t-interval across seeds (last column: over problems, per seed).")


def before_after(workdir, run: int = 0, n: int = 6) -> str:
  """Markdown: the first `n` held-out problems (those the first evaluation answered wrong
  first, then right) with run `run`'s greedy answer at the first and the last evaluation. ''
  when fewer than two evaluations exist."""
  from pg.run.tables import markdown_table
  updates = sorted({r["update"] for r in read(workdir)})
  if len(updates) < 2:
    return ""
  first, last = _details(workdir, updates[0]), _details(workdir, updates[-1])
  if not first or not last or run not in first or run not in last:
    return ""
  a, b = first[run]["problems"], last[run]["problems"]
  order = sorted(range(len(a)), key=lambda e: (a[e]["greedy_correct"], e))[:n]
  clean = lambda s: " ".join(str(s).split()).replace("|", "/")
  rows = [[clean(a[e].get("prompt", "")), clean(a[e]["reference"]),
           f"{clean(a[e]['greedy'])} ({'right' if a[e]['greedy_correct'] else 'wrong'})",
           f"{clean(b[e]['greedy'])} ({'right' if b[e]['greedy_correct'] else 'wrong'})"]
          for e in order]
  return markdown_table(["problem", "reference", f"greedy, update {updates[0]}",
                         f"greedy, update {updates[-1]} (run {run})"], rows)
