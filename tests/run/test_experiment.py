"""`pg.run.experiment.run`: resume, workdir checks, every config file, SIGTERM."""

import glob
import json
import os

import jax
import numpy as np
import pytest

from pg.run import configs
from pg.run import experiment
from tiny_config import run_chunks, tiny

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_resume_continues_exactly(tmp_path):
  full = tiny(num_chunks=4, checkpoint_every=2)
  state_a = experiment.run(full, str(tmp_path / "a"), verbose=False)
  half = tiny(num_chunks=2, checkpoint_every=2)
  experiment.run(half, str(tmp_path / "b"), verbose=False)
  state_b = experiment.run(full, str(tmp_path / "b"), verbose=False)  # resumes at chunk 2
  rows_a, rows_b = read_jsonl(tmp_path / "a" / "metrics.jsonl"), read_jsonl(
      tmp_path / "b" / "metrics.jsonl")
  assert len(rows_a) == 2 * 4 * 5 and rows_a == rows_b
  jax.tree_util.tree_map(np.testing.assert_array_equal, state_a.params, state_b.params)
  assert (tmp_path / "b" / "curves.png").exists() is False  # verbose=False: no report
  assert os.listdir(tmp_path / "a" / "tb")


def test_workdir_with_another_config_is_refused(tmp_path):
  experiment.run(tiny(num_chunks=1), str(tmp_path), verbose=False)
  with pytest.raises(ValueError, match="different config"):
    experiment.run(tiny(num_chunks=1, group_size=2), str(tmp_path), verbose=False)


# Every config, and the research fork's (its estimator, loss and task come in through
# config.imports), in CI (slow): each is a whole shrunk run.
CONFIGS = [pytest.param(p, marks=pytest.mark.slow)
           for p in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))
                           + glob.glob(os.path.join(ROOT, "experiments", "fork_example",
                                                    "*_config.py")))
           if "enumerable" not in p]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.basename(str(p)))
def test_every_config_runs_one_shrunk_chunk(path):
  config = configs.load_config_file(path)
  text = open(path).read()
  assert any(f"python experiments/{script}.py" in text  # opens with its command
             for script in ("train", "sweep", "rlhf", "bench_llm", "bench_memory", "bench_train"))
  if config.model.get("init_from"):  # a real checkpoint cannot be shrunk
    pytest.skip("loads a checkpoint: tests/bench/test_bench_llm.py runs its script on a tiny "
                "model")
  with config.unlocked():
    config.num_seeds, config.updates_per_chunk = 2, 2
    config.num_prompts = max(2, config.num_minibatches)
    config.model.update(num_layers=1, d_model=32, num_heads=2)
    if "num_kv_heads" in config.model:  # a Llama-family shape
      config.model.update(num_kv_heads=1, mlp_dim=64)
  _, m, _ = run_chunks(config, 1)
  for k, v in m.items():
    assert np.all(np.isfinite(v)), k


@pytest.mark.parametrize("repeat", [pytest.param(r, marks=pytest.mark.slow) for r in (0, 1)])
def test_sigterm_finishes_the_chunk_and_saves(tmp_path, repeat):
  import signal
  import subprocess
  import sys
  import time
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "train.py"),
         f"--workdir={tmp_path}", "--config.num_seeds=1", "--config.num_chunks=1000",
         "--config.checkpoint_every=1000", "--config.model.num_layers=1"]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  metrics = tmp_path / "metrics.jsonl"
  deadline = time.time() + 120
  while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 0):
    time.sleep(0.2)
  time.sleep(0.3 * repeat)  # land the signal at different points of the loop
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 130, out[-2000:]
  assert "saved the state after chunk" in out
  saved = int(out.split("saved the state after chunk ")[1].split(";")[0])
  rows = read_jsonl(metrics)
  assert saved >= 1 and len(rows) == saved * 10  # logged exactly the chunks that were saved
  assert os.listdir(tmp_path / "checkpoints") == [str(saved)]
