"""Crashes and reproducibility across processes: SIGKILL at random points (inside a chunk and in
the middle of a checkpoint write), restart with the same workdir, and the finished run equals an
uninterrupted one bit for bit; the same config and seeds give identical bytes in two processes."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(os.path.dirname(HERE), "crash_worker.py")
ROWS_PER_CHUNK = 2 * 5  # crash_worker's config: 2 seeds × 5 updates per chunk
NUM_CHUNKS = 12

pytestmark = pytest.mark.slow


def start(workdir, cache, *extra, env=None):
  return subprocess.Popen([sys.executable, WORKER, str(workdir), str(cache), *extra],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, **(env or {})})


def finish(proc, timeout=300):
  out, _ = proc.communicate(timeout=timeout)
  return proc.returncode, out


def rows_in(path):
  if not os.path.exists(path):
    return 0
  with open(path, "rb") as f:
    return f.read().count(b"\n")


def kill_when(proc, metrics, rows, jitter_s):
  """SIGKILL once `metrics` holds >= `rows` lines, `jitter_s` later: a random point of the loop."""
  deadline = time.time() + 240
  while proc.poll() is None and rows_in(metrics) < rows and time.time() < deadline:
    time.sleep(0.001)
  time.sleep(jitter_s)
  if proc.poll() is None:
    proc.send_signal(signal.SIGKILL)
  return finish(proc)


def final_state(workdir):
  path = os.path.join(workdir, "checkpoints", str(NUM_CHUNKS), "default")
  return jax.device_get(ocp.StandardCheckpointer().restore(path))


def read_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run, in its own process."""
  cache = tmp_path_factory.mktemp("xla-cache")
  workdir = tmp_path_factory.mktemp("uninterrupted")
  code, out = finish(start(workdir, cache))
  assert code == 0 and "FINISHED" in out, out[-3000:]
  return workdir, cache


def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(reference, tmp_path):
  ref_dir, cache = reference
  rng = np.random.default_rng(0)
  metrics = os.path.join(tmp_path, "metrics.jsonl")
  kinds = []
  # Alternate: a kill in the middle of a checkpoint write (the worker kills itself when the
  # write's temporary directory appears), then a kill from outside at a random time once a
  # random number of chunks has been logged. Checkpoints are written after chunks 2, 4, 6, ...
  for first_save in (2, 4, 7):
    code, out = finish(start(tmp_path, cache, "--die-in-save", str(first_save)))
    assert code == -signal.SIGKILL and "KILLING during the write of " in out, out[-3000:]
    killed = int(out.split("KILLING during the write of ")[1].split(".")[0])
    names = os.listdir(os.path.join(tmp_path, "checkpoints"))
    assert str(killed) not in names, names  # the write was cut off, never finalized
    kinds.append(f"checkpoint write of chunk {killed}")

    # The write is asynchronous: the next chunk may be logged while it is in flight. The file
    # still holds the killed run's rows (the restarted run drops those past its checkpoint),
    # so the target lies past them; it also leaves >= 2 chunks to run.
    logged = rows_in(metrics) // ROWS_PER_CHUNK
    assert logged >= killed
    target = int(rng.integers(logged + 1, min(logged + 3, NUM_CHUNKS - 2) + 1))
    jitter = float(rng.uniform(0.0, 0.02))
    code, out = kill_when(start(tmp_path, cache), metrics, target * ROWS_PER_CHUNK, jitter)
    assert code == -signal.SIGKILL, f"the kill after chunk {target} did not land: {out[-3000:]}"
    kinds.append(f"{jitter * 1e3:.0f} ms after chunk {target} was logged")
  assert len(kinds) >= 5

  code, out = finish(start(tmp_path, cache))
  assert code == 0 and "FINISHED" in out, out[-3000:]

  # Metrics: every update exactly once, equal to the uninterrupted run's (floats as written).
  rows, ref_rows = read_rows(tmp_path), read_rows(ref_dir)
  assert len(rows) == NUM_CHUNKS * ROWS_PER_CHUNK
  assert rows == ref_rows, kinds
  # Final state (params, optimizer, keys, hyperparameters): bit for bit.
  got, want = final_state(tmp_path), final_state(ref_dir)
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
  jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)


def test_same_config_and_seeds_give_identical_bytes_in_another_process(reference, tmp_path):
  ref_dir, cache = reference
  # Another process, another hash seed: nothing may depend on dict or set ordering.
  code, out = finish(start(tmp_path, cache, env={"PYTHONHASHSEED": "12345"}))
  assert code == 0, out[-3000:]
  with open(os.path.join(ref_dir, "metrics.jsonl"), "rb") as f:
    want = f.read()
  with open(os.path.join(tmp_path, "metrics.jsonl"), "rb") as f:
    assert f.read() == want
  jax.tree_util.tree_map(np.testing.assert_array_equal, final_state(tmp_path),
                         final_state(ref_dir))
