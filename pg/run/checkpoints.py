"""A run's orbax checkpoints: refuse another run's, fall back past damaged ones, and name the
path and the bytes when the disk is full."""

from __future__ import annotations

import errno
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp

from pg import train


class DiskFullError(OSError):
  """No space left while writing a run's files; the message names the path and the bytes."""


def open_manager(workdir: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=ocp.CheckpointManagerOptions(max_to_keep=2),
                               item_handlers=ocp.StandardCheckpointHandler())


def is_disk_full(e: BaseException) -> bool:
  """Whether `e` or an exception it was raised from is ENOSPC (orbax and tensorstore wrap it)."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if "No space left on device" in str(e) or "Disk quota exceeded" in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False


def state_bytes(state) -> int:
  return int(sum(np.dtype(x.dtype).itemsize * int(np.prod(x.shape))
                 for x in jax.tree_util.tree_leaves(state)))


def disk_full_error(path: str, need_bytes: int, what: str, resume_chunk: int) -> DiskFullError:
  try:
    free = shutil.disk_usage(path if os.path.isdir(path) else os.path.dirname(path) or ".").free
  except OSError:
    free = 0
  return DiskFullError(
      errno.ENOSPC, f"disk full writing {what} to {path}: it needs about "
      f"{need_bytes / 2**20:,.1f} MiB and {free / 2**20:,.1f} MiB are free. Free some space (or "
      f"pass another --workdir) and rerun the same command: it resumes from chunk "
      f"{resume_chunk}.")


def refuse_other_runs_checkpoints(manager, abstract_state, workdir):
  """Raises, naming the leaves that differ, if a checkpoint in `workdir` holds a state of
  other shapes (another model size, run count or optimizer): such a checkpoint is another
  run's, not a damaged one, and is left in place. Reads metadata only (nothing compiles); a
  checkpoint whose metadata cannot be read is left to `restore_latest_good`."""
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


def restore_latest_good(manager, state, workdir):
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


def save(manager, state, step: int, force: bool = False) -> None:
  """Saves `state` as chunk `step` (asynchronously); a full disk raises `DiskFullError`."""
  leaves = jax.tree_util.tree_leaves(state.params)
  if not all(bool(np.all(np.isfinite(np.asarray(x)))) for x in leaves):
    raise FloatingPointError(f"refusing to checkpoint non-finite parameters at chunk {step}.")
  try:
    manager.save(step, args=ocp.args.StandardSave(state), force=force)
  except Exception as e:
    raise_if_disk_full(e, manager, state)
    raise


def wait(manager, state) -> None:
  """Waits for the last save; a full disk found there raises `DiskFullError`."""
  try:
    manager.wait_until_finished()
  except Exception as e:
    raise_if_disk_full(e, manager, state)
    raise


def raise_if_disk_full(e, manager, state):
  if is_disk_full(e):
    latest = manager.latest_step() or 0
    raise disk_full_error(str(manager.directory), 2 * state_bytes(state), "a checkpoint",
                          latest) from e
