"""Running a config: every seed in one compiled program, with progress, logs, plots, checkpoints.

`run(config, workdir)` does, in order: validate the config (before compiling), restore the last
orbax checkpoint in `workdir` if there is one (a rerun resumes), then for each chunk of updates
call the jitted, seed-vmapped `train_chunk`, append one JSONL row per seed and update, write
TensorBoard scalars, and checkpoint every `checkpoint_every` chunks. On Ctrl-C or SIGTERM it
finishes the chunk in flight, saves it and exits; at the end it plots the learning curves and
prints a few decoded samples.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from tqdm import tqdm

from pg.run import plotting
from pg.policy import sampler
from pg import train

# May differ on resume: more chunks, other checkpoint spacing or workdir, and the sweep grid
# (a sweep batch's runs are compared one by one instead).
STATIC_FIELDS_ALLOWED_TO_CHANGE = ("num_chunks", "checkpoint_every", "workdir", "sweep")


def _comparable(config_dict: dict) -> dict:
  return {k: v for k, v in config_dict.items() if k not in STATIC_FIELDS_ALLOWED_TO_CHANGE}


def comparable_config(config) -> dict:
  """The config as JSON, less the fields a rerun in the same workdir may change."""
  return _comparable(json.loads(config.to_json_best_effort()))


def differing_fields(saved: dict, current: dict) -> list:
  """Sorted names of the top-level fields whose values differ between two config dicts."""
  return sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))


class MetricsLog:
  """JSONL rows {"run", its labels ("seed", swept values...), "update", metric...}; on resume,
  rows past the checkpoint are dropped, so no update is ever logged twice."""

  def __init__(self, path, keep_updates_below: int):
    self.path = path
    rows = []
    if os.path.exists(path):
      with open(path) as f:
        for line in f:
          try:
            row = json.loads(line)
          except json.JSONDecodeError:  # a line cut short by a killed process
            continue
          if row["update"] < keep_updates_below:
            rows.append(line if line.endswith("\n") else line + "\n")
    with open(path, "w") as f:
      f.writelines(rows)

  def append(self, metrics, first_update: int, labels=None):
    """metrics: dict of arrays `[num_runs, K]`; labels: one dict per run (default: seed = run)."""
    names = sorted(metrics)
    arrays = {k: np.asarray(metrics[k]) for k in names}
    R, K = arrays[names[0]].shape
    labels = labels or [{"seed": r} for r in range(R)]
    with open(self.path, "a") as f:
      for r in range(R):
        for k in range(K):
          row = {"run": r, **labels[r], "update": first_update + k}
          row.update({n: float(arrays[n][r, k]) for n in names})
          f.write(json.dumps(row) + "\n")

  def read(self, labels=()):
    """Every metric as an array `[num_runs, num_updates]` (`labels`: swept names to leave out)."""
    with open(self.path) as f:
      rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
      return {}
    index = "run" if "run" in rows[0] else "seed"
    R = 1 + max(r[index] for r in rows)
    U = 1 + max(r["update"] for r in rows)
    skip = {"run", "seed", "update", *labels}
    out = {k: np.full((R, U), np.nan) for k in rows[0] if k not in skip}
    for r in rows:
      for k in out:
        out[k][r[index], r["update"]] = r[k]
    return out


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
  with open(path, "w") as f:
    json.dump({"config": json.loads(config.to_json_best_effort()), "runs": labels}, f, indent=2)


def run(config, workdir: str, *, task=None, policy=None, runs: train.Runs | None = None,
        programs=None, verbose: bool = True, report_at_end: bool | None = None,
        desc: str = "chunks"):
  """Trains every run (default: `config.num_seeds` seeds) for `config.num_chunks` chunks and
  returns the final state. `task` and `policy` are what `pg.train.build(config)` made (built
  here when not given; a given `task` alone replaces config.task). `runs` (`pg.train.Runs`)
  sets each run's key, hyperparameters and labels (a sweep); `programs` a prebuilt
  `(init, train_chunk)` pair for them. `verbose`: progress bar and messages; `report_at_end`
  (default: verbose) the curves, table and samples."""
  if policy is None:
    task, policy = train.build(config, task)
  labels = runs.labels if runs else train.seed_labels(config)
  # Built (not compiled) first: a mesh or init_from it refuses leaves the workdir untouched.
  init, train_chunk = programs or train.make_programs(config, task, policy, len(labels))
  os.makedirs(workdir, exist_ok=True)
  _check_workdir(workdir, config, labels)
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                  options=ocp.CheckpointManagerOptions(max_to_keep=2),
                                  item_handlers=ocp.StandardCheckpointHandler())
  _refuse_other_runs_checkpoints(manager, _abstract_state(config, runs, init), workdir)
  runs = runs or train.seed_runs(config)
  state = init(runs.keys, runs.hp)
  state, start_chunk = _restore_latest_good(manager, state, workdir)
  if start_chunk and verbose:
    print(f"resumed from {workdir} at chunk {start_chunk} "
          f"(update {start_chunk * config.updates_per_chunk})")
  K = config.updates_per_chunk
  log = MetricsLog(os.path.join(workdir, "metrics.jsonl"), keep_updates_below=start_chunk * K)
  tb = _tensorboard(os.path.join(workdir, "tb"))

  bar = tqdm(range(start_chunk, config.num_chunks), initial=start_chunk,
             total=config.num_chunks, desc=desc, unit="chunk", disable=not verbose)
  completed = start_chunk

  def commit(result, chunk):
    nonlocal state, completed
    new_state, metrics = result
    metrics = jax.device_get(metrics)
    log.append(metrics, chunk * K, runs.labels)
    _write_tensorboard(tb, metrics, chunk * K)
    state, completed = new_state, chunk + 1
    skipped = int(np.sum(metrics["skipped"]))
    last = np.asarray(metrics["mean_score"][:, -1])
    last = last[np.isfinite(last)]
    bar.set_postfix(score=f"{last.mean():.3f}" if last.size else "nan",
                    **({"skipped": skipped} if skipped else {}))
    failure = _first_nonfinite(metrics, chunk * K, runs.labels)
    if failure and config.get("on_nonfinite", "stop") == "stop":
      save(completed, force=True)  # the failing runs stopped at their last good state
      manager.wait_until_finished()
      raise FloatingPointError(
          f"{failure}. The run stopped; the last good state is saved in {workdir} (chunk "
          f"{completed}). Set config.on_nonfinite='skip' to skip such updates instead.")
    if completed % config.checkpoint_every == 0 or completed == config.num_chunks:
      save(completed)

  def save(step, force=False):
    leaves = jax.tree_util.tree_leaves(state.params)
    if not all(bool(np.all(np.isfinite(np.asarray(x)))) for x in leaves):
      raise FloatingPointError(f"refusing to checkpoint non-finite parameters at chunk {step}.")
    manager.save(step, args=ocp.args.StandardSave(state), force=force)

  start = time.time()
  stop = _StopRequest()
  previous = stop.install()
  try:
    for chunk in bar:
      commit(train_chunk(state), chunk)  # `state` is donated to the call
      if stop.signum is not None:
        if manager.latest_step() != completed:
          save(completed, force=True)
        manager.wait_until_finished()
        print(f"\nstopped by signal {stop.signum}: saved the state after chunk {completed}; "
              f"rerun with the same workdir to resume.")
        raise KeyboardInterrupt(stop.signum)
  finally:
    manager.wait_until_finished()
    if tb is not None:
      tb.close()
    stop.uninstall(previous)
  if verbose:
    print(f"{config.num_chunks - start_chunk} chunks in {time.time() - start:.1f}s "
          f"(compile included)")
  if verbose if report_at_end is None else report_at_end:
    report(config, workdir, log, state, task, policy)
  return state


def _abstract_state(config, runs, init):
  """The state `init` builds for `runs` (default: one per seed), as shapes: nothing runs."""
  keys = runs.keys if runs else jax.eval_shape(lambda: train.seed_keys(config))
  hp = runs.hp if runs else train.hparams_from_config(config)
  return jax.eval_shape(init, keys, hp)


def _refuse_other_runs_checkpoints(manager, abstract_state, workdir):
  """Raises, naming the leaves that differ, if a checkpoint in `workdir` holds a state of
  other shapes (another model size, run count or optimizer): such a checkpoint is another
  run's, not a damaged one, and is left in place. Reads metadata only (nothing compiles); a
  checkpoint whose metadata cannot be read is left to `_restore_latest_good`."""
  for step in manager.all_steps():
    try:
      saved = manager.item_metadata(step)
    except Exception:  # damaged: restoring it will fail, and it is then replaced
      continue
    if saved is None:
      continue
    diff = train.shape_mismatch(saved, abstract_state)
    if diff:
      raise ValueError(
          f"workdir {workdir!r} holds a checkpoint (chunk {step}) of another run whose state "
          f"does not fit this config ({diff}); nothing was deleted. Use another --workdir, or "
          f"delete {manager.directory} to start over.")


def _restore_latest_good(manager, state, workdir):
  """(state, chunk) from the newest checkpoint that restores; newer ones that do not (a
  truncated or corrupted write) are reported and deleted, so the run redoes those chunks."""
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
      reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
      print(f"checkpoint of chunk {step} in {workdir} cannot be restored ({type(e).__name__}: "
            f"{reason}); deleting it and falling back to the one before.", flush=True)
      manager.delete(step)
      continue
    return restored, step
  return state, 0


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


class _StopRequest:
  """SIGINT / SIGTERM ask to stop after the chunk in flight (which is then logged and saved);
  a second signal stops at once."""

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.signum = None

  def __call__(self, signum, frame):
    if self.signum is not None:
      raise KeyboardInterrupt(signum)
    self.signum = signum
    print(f"\nsignal {signum}: stopping after this chunk (send it again to stop now)",
          flush=True)

  def install(self):
    if threading.current_thread() is not threading.main_thread():
      return None
    return {s: signal.signal(s, self) for s in self.SIGNALS}

  def uninstall(self, previous):
    for s, handler in (previous or {}).items():
      signal.signal(s, handler)


def _tensorboard(path):
  try:
    from tensorboardX import SummaryWriter
  except ImportError:  # optional: JSONL and the PNG carry the same numbers
    return None
  return SummaryWriter(path)


def _write_tensorboard(tb, metrics, first_update):
  if tb is None:
    return
  for name, x_SxK in metrics.items():
    for k in range(x_SxK.shape[1]):
      tb.add_scalar(f"{name}/mean_over_seeds", float(np.mean(x_SxK[:, k])), first_update + k)
  tb.flush()


def report(config, workdir, log, state, task, policy):
  """Curves PNG, a final table, and decoded samples from seed 0."""
  curves = log.read()
  metrics = ("mean_score", "entropy", "response_length")
  if config.kl_placement != "none":
    metrics += ("kl_to_ref",)
  path = plotting.plot_curves({config.advantage: curves}, os.path.join(workdir, "curves.png"),
                              metrics=tuple(m for m in metrics if m in curves))
  print(plotting.summary_table(
      {config.advantage: curves},
      [("score, first 10%", "mean_score", (0.0, 0.1)), ("score, last 10%", "mean_score",
                                                        (0.9, 1.0))],
      note=f"{config.num_seeds} seeds; ± is a 95% interval across seeds."))
  print(f"learning curves: {path}\nmetrics: {log.path}\n")
  params0 = jax.tree_util.tree_map(lambda x: x[0], state.params)
  prompts = task.sample_prompts(jax.random.PRNGKey(12345), 4)
  s = sampler.sample(policy, params0, prompts, jax.random.PRNGKey(0),
                     max_new_tokens=task.max_new_tokens, eos_id=task.eos_id, pad_id=task.pad_id,
                     temperature=float(state.hp["temperature"][0]))
  scores = task.score(prompts, s.tokens_BxT, s.mask_BxT)
  print("samples from seed 0 after training:")
  for i in range(prompts.shape[0]):
    n = int(np.sum(np.asarray(s.mask_BxT[i])))
    print(f"  {task.decode(prompts[i])}  →  {task.decode(s.tokens_BxT[i][:n])}"
          f"   (score {float(scores[i]):.2f})")
