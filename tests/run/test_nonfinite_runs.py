"""A run meets NaN: a Python reward behaves as a JAX one ("stop" names update, run and quantity
and saves; "skip" carries on and counts), a run skipping too much ends non-zero, NaN never
reaches the metrics file as a non-JSON token; a full disk and a bad workdir are named."""

import errno
import json
import os

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from pg import tasks
from pg.run import checkpoints, experiment
from tiny_config import tiny


def python_nan_task(poison_every: int):
  """count_up-like Python reward: the number of tokens, or NaN for prompts ≡ 0 (mod k)."""
  def reward(prompt, response):
    if prompt[0] % poison_every == 0:
      return float("nan")
    return len(response) / 4
  return tasks.python_task("py_nan", reward, vocab_size=6, prompt_len=1, max_new_tokens=4,
                           eos_id=4, pad_id=5,
                           sample_prompts=lambda key, n: jax_randint(key, n))


def jax_randint(key, n):
  import jax
  return jax.random.randint(key, (n, 1), 0, 4).astype(jnp.int32)


def config(mode, **kw):
  c = tiny(**{"num_chunks": 3, "updates_per_chunk": 4, "on_nonfinite": mode, **kw})
  c.task.name, c.task.options = "py_nan", {}
  return c


def rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_a_python_rewards_nan_stops_the_run_naming_update_run_and_quantity(tmp_path):
  with pytest.raises(FloatingPointError, match=r"non-finite reward at update (\d+) of run \d+ "
                                               r"\(seed=\d\)\. The run stopped; the last good "
                                               r"state is saved") as e:
    experiment.run(config("stop"), str(tmp_path), task=python_nan_task(4), verbose=False)
  update = int(e.value.args[0].split("at update ")[1].split()[0])
  assert update == min(r["update"] for r in rows(tmp_path) if r["nonfinite_reward"] > 0)
  text = open(os.path.join(tmp_path, "metrics.jsonl")).read()
  assert "NaN" not in text and "null" in text  # standard JSON: a skipped score is null
  assert ocp.CheckpointManager(os.path.abspath(tmp_path / "checkpoints")).latest_step()


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_skip_carries_on_counts_and_the_threshold_ends_a_run_that_skips_too_much(tmp_path):
  # Prompts are 0..3, 8 per update: nearly every update meets a 0 and is skipped.
  with pytest.raises(FloatingPointError, match=r"run 0 \(seed=0\) skipped \d+ of its \d+ "
                                               r"updates so far .*more than "
                                               r"config.max_skipped_fraction = 0.1 of the 12 "
                                               r"planned"):
    experiment.run(config("skip"), str(tmp_path / "strict"), task=python_nan_task(4),
                   verbose=False)
  # A lenient threshold: the run finishes, every poisoned update skipped and counted.
  experiment.run(config("skip", max_skipped_fraction=1.0), str(tmp_path / "lenient"),
                 task=python_nan_task(4), verbose=False)
  log = rows(tmp_path / "lenient")
  assert len(log) == 2 * 12
  assert all(r["skipped"] == 1.0 for r in log if r["nonfinite_reward"] > 0)
  assert any(r["nonfinite_reward"] > 0 for r in log)


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_every_update_skipped_never_prints_nan(tmp_path, capsys):
  c = config("skip", max_skipped_fraction=1.0, num_chunks=1)
  experiment.run(c, str(tmp_path), task=python_nan_task(1), verbose=True)
  out = capsys.readouterr().out
  assert "nan" not in out.lower().replace("py_nan", "")
  assert all(r["mean_score"] is None and r["skipped"] == 1.0 for r in rows(tmp_path))


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_a_full_disk_names_the_path_and_the_bytes_and_the_run_resumes(tmp_path, monkeypatch):
  c = tiny(num_chunks=3, checkpoint_every=1)
  real_save = ocp.CheckpointManager.save

  def save(self, step, *args, **kwargs):
    if step == 2:
      raise OSError(errno.ENOSPC, "No space left on device", str(self.directory))
    return real_save(self, step, *args, **kwargs)
  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  with pytest.raises(checkpoints.DiskFullError) as e:
    experiment.run(c, str(tmp_path), verbose=False)
  message = e.value.strerror
  assert str(tmp_path / "checkpoints") in message and "MiB" in message
  assert "needs about" in message and "resumes from chunk 1" in message
  monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
  experiment.run(c, str(tmp_path), verbose=False)  # resumes from chunk 1 and finishes
  assert len(rows(tmp_path)) == 2 * 3 * c.updates_per_chunk


def test_a_disk_full_error_is_recognised_through_wrappers():
  try:
    try:
      raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as inner:
      raise ValueError("tensorstore write failed") from inner
  except ValueError as outer:
    assert checkpoints.is_disk_full(outer)
  assert checkpoints.is_disk_full(RuntimeError("INTERNAL: ... No space left on device"))
  assert not checkpoints.is_disk_full(OSError(errno.ENOENT, "missing"))


def test_a_workdir_that_is_a_file_is_named(tmp_path):
  path = tmp_path / "afile"
  path.write_text("x")
  with pytest.raises(NotADirectoryError, match=r"--workdir '.*afile' is a file, not a folder"):
    experiment.run(tiny(), str(path), verbose=False)


def test_a_workdir_that_cannot_be_written_is_named(tmp_path, monkeypatch):
  monkeypatch.setattr(os, "access", lambda path, mode: False)  # root ignores chmod
  with pytest.raises(PermissionError, match=r"--workdir '.*' is not writable"):
    experiment.run(tiny(), str(tmp_path / "w"), verbose=False)
