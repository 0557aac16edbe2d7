"""Running a config: every seed in one compiled program, with progress, logs, plots, checkpoints.

`run(config, workdir)` does, in order: check the config's fields and values (before compiling),
restore the last orbax checkpoint in `workdir` if there is one (a rerun resumes), compile the
chunk program (the bar says "compiling… Ns"), then for each chunk of updates call the jitted,
seed-vmapped `train_chunk` (the bar moves per update), append one JSONL row per seed and update,
write TensorBoard scalars, and checkpoint every `checkpoint_every` chunks. On Ctrl-C or SIGTERM
it finishes the chunk in flight, saves it and stops; at the end it plots the learning curves and
prints a table and a few decoded samples.

Non-finite numbers: with `on_nonfinite = "stop"` the first NaN/inf reward, loss or gradient
saves the last good state and stops, naming the update, the run and the quantity; with "skip"
such updates change nothing and are counted, and a run that skipped more than
`max_skipped_fraction` of its planned updates stops the same way. A full disk names the path
and the bytes, and leaves the workdir resumable.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
from tqdm import tqdm

from pg import train
from pg.policy import lora, sampler
from pg.run import checkpoints, evaluation, plotting, progress, schema, tensorboard
from pg.run.interrupts import StopRequest
from pg.run.metrics_log import MetricsLog, atomic_write

__all__ = ["run", "report", "MetricsLog", "comparable_config", "differing_fields"]

# May differ on resume: more chunks, other checkpoint spacing or workdir, the device mesh (a
# checkpoint restores onto any mesh) and the sweep grid
# (a sweep batch's runs are compared one by one instead).
STATIC_FIELDS_ALLOWED_TO_CHANGE = ("num_chunks", "checkpoint_every", "workdir", "sweep", "mesh")


def _comparable(config_dict: dict) -> dict:
  return {k: v for k, v in config_dict.items() if k not in STATIC_FIELDS_ALLOWED_TO_CHANGE}


def comparable_config(config) -> dict:
  """The config as JSON, less the fields a rerun in the same workdir may change."""
  return _comparable(json.loads(config.to_json_best_effort()))


def differing_fields(saved: dict, current: dict) -> list:
  """Sorted names of the top-level fields whose values differ between two config dicts."""
  return sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))


def make_workdir(workdir: str) -> None:
  """Creates `workdir`, or raises one line naming it when it is a file or cannot be written."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise NotADirectoryError(f"--workdir {workdir!r} is a file, not a folder: pass another "
                             f"--workdir (or move the file).")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise type(e)(e.errno, f"--workdir {workdir!r} cannot be created ({e.strerror}): pass a "
                           f"folder you can write.") from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise PermissionError(f"--workdir {workdir!r} is not writable: pass a folder you can "
                          f"write.")


def _check_workdir(workdir, config, labels):
  """A workdir holds one run set: the same config (up to STATIC_FIELDS_ALLOWED_TO_CHANGE) and the
  same runs, or it is refused before anything compiles."""
  current = {"config": comparable_config(config), "runs": labels}
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      try:
        saved = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"workdir {workdir!r}: {path} is not the JSON a run writes ({e}); "
                         f"use another --workdir or delete it.") from None
    saved = {"config": _comparable(saved.get("config", saved)), "runs": saved.get("runs")}
    if saved["runs"] is None:  # written by a run of seeds only
      saved["runs"] = [{"seed": j} for j in range(saved["config"].get("num_seeds", 0))]
    if saved != current:
      diff = differing_fields(saved["config"], current["config"])
      if saved["runs"] != current["runs"]:
        diff.append("runs")
      raise ValueError(f"workdir {workdir!r} holds a run with a different config (fields "
                       f"{diff}); use another --workdir or delete it.")
  atomic_write(path, json.dumps({"config": json.loads(config.to_json_best_effort()),
                                 "runs": labels}, indent=2))


def run(config, workdir: str, *, task=None, policy=None, runs: train.Runs | None = None,
        programs=None, verbose: bool = True, report_at_end: bool | None = None,
        desc: str = "updates", blocks=None, counter: progress.UpdateCounter | None = None,
        title: str | None = None):
  """Trains every run (default: `config.num_seeds` seeds) for `config.num_chunks` chunks and
  returns the final state. `task` and `policy` are what `pg.train.build(config)` made (built
  here when not given; a given `task` alone replaces config.task). `runs` (`pg.train.Runs`)
  sets each run's key, hyperparameters and labels (a sweep); `programs` a prebuilt
  `(init, train_chunk)` pair for them, compiled with `counter` as its `on_update`. `blocks`:
  the pipeline blocks (name -> fields) the caller reads besides the base config's fields
  (`pg.run.schema`). `verbose`: progress bar and messages; `report_at_end` (default: verbose)
  the curves (titled `title`), table and samples."""
  schema.check(config, blocks)
  if policy is None:
    task, policy = train.build(config, task)
  labels = runs.labels if runs else train.seed_labels(config)
  if programs is None:
    counter = progress.UpdateCounter() if verbose else None
    programs = train.make_programs(config, task, policy, len(labels), on_update=counter)
  init, train_chunk = programs  # built (not compiled): a refusal leaves the workdir untouched
  evaluation.check_config(config, task)
  make_workdir(workdir)
  _check_workdir(workdir, config, labels)
  manager = checkpoints.open_manager(workdir)
  checkpoints.refuse_other_runs_checkpoints(manager, _abstract_state(config, runs, init), workdir)
  runs = runs or train.seed_runs(config)
  state = init(runs.keys, runs.hp)
  state, start_chunk = checkpoints.restore_latest_good(manager, state, workdir)
  K, total = config.updates_per_chunk, config.num_chunks * config.updates_per_chunk
  if start_chunk and verbose:
    print(f"resumed from {workdir} at chunk {start_chunk} (update {start_chunk * K})")
  log = MetricsLog(os.path.join(workdir, "metrics.jsonl"), keep_updates_below=start_chunk * K)
  skipped_R = _skipped_so_far(log, len(labels))
  tb = tensorboard.open_writer(os.path.join(workdir, "tb"), runs.labels, start_chunk * K)
  base = getattr(init, "base", None)  # LoRA's frozen base (the runs' params are adapters)
  evaluator = (evaluation.Evaluator(config, task, policy, workdir, verbose, base=base)
               if config.get("eval_every", 0) else None)
  evaluated = {r["update"] for r in evaluation.truncate(workdir, start_chunk * K)}
  warned = set()

  def evaluate(update):
    if evaluator is None or not evaluation.due(config, update, total) or update in evaluated:
      return
    rows = evaluator(state.params, update, runs.labels)
    evaluated.add(update)
    tensorboard.write_points(tb, rows, update)
    if verbose:
      bar.write(evaluation.one_line(rows, update))
    warn_truncation({"held-out": np.mean([r[evaluation.PREFIX + "truncated"] for r in rows])},
                    update)

  def warn_truncation(shares, update):
    for where, share in shares.items():
      if verbose and share > 0.5 and where not in warned:
        warned.add(where)
        bar.write(f"warning: {share:.0%} of the {where} responses at update {update} hit "
                  f"max_new_tokens = {task.max_new_tokens} without an end token; they are "
                  f"scored as cut off (often 0). Raise config.task.options.max_new_tokens or "
                  f"ask for shorter answers.")
  bar = tqdm(total=total, initial=start_chunk * K, desc=desc, unit="update",
             disable=not verbose)
  if counter is not None:
    counter.done, counter.bar = start_chunk * K, (bar if verbose else None)
  completed = start_chunk

  def commit(result, chunk):
    nonlocal state, completed, skipped_R
    new_state, metrics = result
    metrics = jax.device_get(metrics)
    try:
      log.append(metrics, chunk * K, runs.labels)
      tensorboard.write_chunk(tb, metrics, chunk * K)
    except OSError as e:
      if checkpoints.is_disk_full(e):
        raise checkpoints.disk_full_error(log.path, _bytes(metrics), "the metrics",
                                          manager.latest_step() or 0) from e
      raise
    state, completed = new_state, chunk + 1
    skipped_R = skipped_R + np.sum(np.asarray(metrics["skipped"]), axis=1)
    bar.update(completed * K - bar.n)
    last = np.asarray(metrics["mean_score"][:, -1])
    last = last[np.isfinite(last)]
    bar.set_postfix(score=f"{last.mean():.3f}" if last.size else "—",
                    **({"skipped": int(skipped_R.sum())} if skipped_R.sum() else {}))
    failure = _first_nonfinite(metrics, chunk * K, runs.labels)
    if failure and config.get("on_nonfinite", "stop") == "stop":
      stop_with(f"{failure}. The run stopped; the last good state is saved in {workdir} "
                f"(chunk {completed}). Set config.on_nonfinite='skip' to skip such updates "
                f"instead.")
    over = _too_many_skipped(skipped_R, completed * K, total,
                             config.get("max_skipped_fraction", 1.0), runs.labels)
    if over:
      stop_with(f"{over}; the state is saved in {workdir} (chunk {completed}).")
    if completed % config.checkpoint_every == 0 or completed == config.num_chunks:
      checkpoints.save(manager, state, completed)
    warn_truncation({"training": float(np.mean(metrics["truncated_fraction"][:, -1]))},
                    completed * K)
    evaluate(completed * K)

  def stop_with(message):
    checkpoints.save(manager, state, completed, force=True)  # failing runs: last good state
    checkpoints.wait(manager, state)
    raise FloatingPointError(message)

  start = time.time()
  stop = StopRequest()
  previous = None
  try:
    if start_chunk < config.num_chunks:
      train_chunk = progress.compile_in_background(train_chunk, (state,),
                                                   bar if verbose else None)
    previous = stop.install()
    evaluate(start_chunk * K)  # update 0, or an evaluation a crash left undone
    for chunk in range(start_chunk, config.num_chunks):
      result = train_chunk(state)  # `state` is donated to the call
      progress.wait_until_ready(result)
      commit(result, chunk)
      if stop.signum is not None:
        if manager.latest_step() != completed:
          checkpoints.save(manager, state, completed, force=True)
        checkpoints.wait(manager, state)
        bar.close()
        print(f"\nstopped by signal {stop.signum}: saved the state after chunk {completed}; "
              f"rerun with the same workdir to resume.", flush=True)
        raise KeyboardInterrupt(stop.signum)
  finally:
    if counter is not None:
      counter.bar = None
    try:
      checkpoints.wait(manager, state)
    finally:
      tensorboard.close(tb)
      stop.uninstall(previous)
      bar.close()
  if verbose:
    print(f"{config.num_chunks - start_chunk} chunks in {time.time() - start:.1f}s "
          f"(compile included)")
  if verbose if report_at_end is None else report_at_end:
    report(config, workdir, log, state, task, policy, title=title, base=base)
  return state


def _bytes(metrics) -> int:
  return int(sum(np.asarray(x).nbytes for x in metrics.values())) * 8  # as JSON text, roughly


def _abstract_state(config, runs, init):
  """The state `init` builds for `runs` (default: one per seed), as shapes: nothing runs."""
  keys = runs.keys if runs else jax.eval_shape(lambda: train.seed_keys(config))
  hp = runs.hp if runs else train.hparams_from_config(config)
  return jax.eval_shape(init, keys, hp)


def _skipped_so_far(log: MetricsLog, num_runs: int):
  """Each run's count of skipped updates in the rows kept from before a resume."""
  skipped = log.read().get("skipped") if os.path.getsize(log.path) else None
  if skipped is None:
    return np.zeros(num_runs)
  return np.nansum(skipped, axis=1)[:num_runs]


def _too_many_skipped(skipped_R, done: int, total: int, fraction: float, labels):
  """A one-line summary if a run has skipped more than `fraction` of its `total` planned
  updates (it can no longer end below the threshold), else None."""
  over = np.nonzero(skipped_R > fraction * total)[0]
  if not over.size:
    return None
  r = int(over[0])
  who = ", ".join(f"{a}={b}" for a, b in labels[r].items())
  others = f" ({over.size - 1} other runs too)" if over.size > 1 else ""
  return (f"run {r} ({who}) skipped {int(skipped_R[r])} of its {done} updates so far "
          f"(non-finite reward, loss or gradient), more than config.max_skipped_fraction = "
          f"{fraction:g} of the {total} planned{others}")


def _first_nonfinite(metrics, first_update, labels):
  """'non-finite <quantity> at update u of run {labels}' for the earliest one, or None."""
  hits = []  # (update, run, order): a NaN reward makes the loss and gradient NaN too
  quantities = ("reward", "loss", "grad")
  for order, quantity in enumerate(quantities):
    flags = metrics.get(f"nonfinite_{quantity}")
    if flags is None:
      continue
    for r, k in zip(*np.nonzero(np.asarray(flags) > 0)):
      hits.append((k, r, order))
  if not hits:
    return None
  k, r, order = min(hits)
  quantity = quantities[order]
  name = {"grad": "gradient"}.get(quantity, quantity)
  return (f"non-finite {name} at update {first_update + k} of run {r} "
          f"({', '.join(f'{a}={b}' for a, b in labels[r].items())})")


def report(config, workdir, log, state, task, policy, title=None, base=None):
  """Curves PNG, a final table (score and the task's extra metrics), and decoded samples from
  seed 0."""
  curves = log.read()
  metrics = ("mean_score", "entropy", "response_length")
  if config.kl_placement != "none":
    metrics += ("kl_to_ref",)
  extra = tuple(k for k in extra_metric_names(task) if k in curves)
  name = title or os.path.basename(os.path.normpath(workdir))
  eval_updates, eval_curves = evaluation.curves(evaluation.read(workdir), config.num_seeds)
  shown = tuple(m for m in metrics + extra if m in curves)
  heldout = tuple(k for k in eval_curves if k.endswith(("greedy", "pass@1")) or "maj@" in k)
  path = plotting.plot_curves({config.advantage: {**curves, **eval_curves}},
                              os.path.join(workdir, "curves.png"), metrics=shown + heldout,
                              bounds={**plotting.metric_bounds(task),
                                      **{k: (0.0, 1.0) for k in heldout}}, title=name,
                              steps={k: eval_updates for k in heldout})
  columns = [(f"{m}, {part}", m, window) for m in ("mean_score",) + extra
             for part, window in (("first 10%", (0.0, 0.1)), ("last 10%", (0.9, 1.0)))]
  print(plotting.summary_table(
      {config.advantage: curves}, columns,
      note=f"{config.num_seeds} seeds; ± is a 95% t-interval across seeds."))
  held = evaluation.summary_table(workdir, [{"seed": j} for j in range(config.num_seeds)])
  if held:
    print("\n" + held)
    print("\nheld-out problems, first and last evaluation:\n"
          + evaluation.before_after(workdir))
  print(f"learning curves: {path}\nmetrics: {log.path}\n")
  params0 = jax.tree_util.tree_map(lambda x: x[0], state.params)
  if base is not None:  # LoRA: seed 0's adapters on the shared base
    params0 = lora.combine(base, params0)
  prompts = task.sample_prompts(jax.random.PRNGKey(12345), 4)
  s = sampler.sample(policy, params0, prompts, jax.random.PRNGKey(0),
                     max_new_tokens=task.max_new_tokens, eos_id=task.eos_id, pad_id=task.pad_id,
                     temperature=float(state.hp["temperature"][0]),
                     prompt_mask_NxP=task.prompt_mask(prompts), eos_ids=task.eos_ids)
  scores = task.score(prompts, s.tokens_BxT, s.mask_BxT)
  print("samples from seed 0 after training:")
  for i in range(prompts.shape[0]):
    n = int(np.sum(np.asarray(s.mask_BxT[i])))
    score = float(scores[i])
    shown = f"{score:.2f}" if np.isfinite(score) else "not finite"
    print(f"  {task.decode_prompt(prompts[i])!s}  →  {task.decode(s.tokens_BxT[i][:n])}"
          f"   (score {shown})")



def extra_metric_names(task) -> tuple:
  """The names of the task's extra metrics (`Task.extra_metrics`), read from shapes only."""
  P, T = task.prompt_len, task.max_new_tokens
  _, out = jax.eval_shape(task.score_and_extras, jax.ShapeDtypeStruct((1, P), np.int32),
                          jax.ShapeDtypeStruct((1, T), np.int32),
                          jax.ShapeDtypeStruct((1, T), np.float32))
  return tuple(sorted(out))
