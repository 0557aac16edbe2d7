"""The scripts as a person meets them: one-line errors (--debug: the traceback), dotted task
options, and Ctrl-C at any moment (imports, compilation, training; once or twice) exiting 130
with nothing written that a rerun trips on."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "experiments", "train.py")

TINY = '''
from pg.run.configs import base_config


def get_config():
  c = base_config()
  c.task.name = "needle"
  c.task.options = {{"length": 4, "num_symbols": 2, "exclusive": False}}
  c.model.update(num_layers=1, d_model=32, num_heads=2)
  c.num_seeds, c.num_prompts, c.group_size = 2, 8, 4
  c.updates_per_chunk, c.num_chunks, c.checkpoint_every = 5, {num_chunks}, 1
{extra}
  return c
'''


def config_file(tmp_path, extra="", num_chunks=2):
  path = tmp_path / "tiny.py"
  path.write_text(TINY.format(extra=extra, num_chunks=num_chunks))
  return str(path)


def train(*args, timeout=600):
  return subprocess.run([sys.executable, TRAIN, *args], capture_output=True, text=True,
                        timeout=timeout, cwd=ROOT)


def test_a_misspelt_field_is_one_line_and_debug_shows_the_traceback(tmp_path):
  path = config_file(tmp_path, extra="  c.num_promts = 64")
  workdir = str(tmp_path / "w")
  r = train("--config", path, "--workdir", workdir)
  assert r.returncode == 1
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
  assert lines[0].startswith("error: config.num_promts is not a field pg reads")
  assert "did you mean config.num_prompts?" in lines[0]
  assert not os.path.exists(workdir)  # refused before anything was written
  r = train("--config", path, "--workdir", workdir, "--config.lerning_rate=1e-3", "--debug")
  assert r.returncode == 1 and "Traceback" in r.stderr
  assert "config.lerning_rate" in r.stderr or "config.num_promts" in r.stderr


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_flag_errors_are_one_line(tmp_path):
  path = config_file(tmp_path)
  for args, expected in (
      (["--config.lerning_rate=1e-3"], "did you mean config.hparams.learning_rate?"),
      (["--config.task.options.lenght=6"], "task 'needle' takes options ['exclusive', "
                                           "'length', 'num_symbols']"),
      (["--config", str(tmp_path / "missing.py")], "no such config file"),
      (["--workdir", path], "is a file, not a folder"),
  ):
    r = train("--config", path, "--workdir", str(tmp_path / "w"), *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode in (1, 2) and len(lines) == 1 and expected in lines[0], r.stderr


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_task_options_take_the_dotted_flag(tmp_path):
  workdir = tmp_path / "w"
  r = train("--config", config_file(tmp_path, num_chunks=1), "--workdir", str(workdir),
            "--config.task.options.length=3", "--config.task.options.exclusive=True")
  assert r.returncode == 0, r.stderr[-2000:]
  saved = json.loads((workdir / "config.json").read_text())["config"]["task"]["options"]
  assert saved == {"length": 3, "num_symbols": 2, "exclusive": True}


class Watched:
  """A training process whose stdout and stderr are read as they come."""

  def __init__(self, *args):
    self.proc = subprocess.Popen([sys.executable, TRAIN, *args], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, cwd=ROOT)
    self.text = {"out": "", "err": ""}
    for name, stream in (("out", self.proc.stdout), ("err", self.proc.stderr)):
      threading.Thread(target=self._read, args=(name, stream), daemon=True).start()

  def _read(self, name, stream):
    for chunk in iter(lambda: stream.read(1), ""):
      self.text[name] += chunk

  def wait_for(self, condition, timeout=300):
    deadline = time.time() + timeout
    while not condition() and self.proc.poll() is None and time.time() < deadline:
      time.sleep(0.01)
    assert self.proc.poll() is None, "the run ended before the signal: " + self.text["err"]

  def interrupt(self, times=1):
    for _ in range(times):
      self.proc.send_signal(signal.SIGINT)
      time.sleep(0.3)
    self.proc.wait(timeout=300)
    time.sleep(0.2)
    return self.proc.returncode


def rows(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  return open(path).read().count("\n") if os.path.exists(path) else 0


@pytest.mark.slow  # several processes; CI runs it
@pytest.mark.parametrize("moment, presses", [
    ("imports", 1), ("compiling", 1), ("compiling", 2), ("training", 1), ("training", 2)])
def test_ctrl_c_at_any_moment_exits_130_and_a_rerun_finishes(tmp_path, moment, presses):
  workdir = str(tmp_path / "w")
  args = ("--config", config_file(tmp_path, num_chunks=4), "--workdir", workdir)
  run = Watched(*args)
  if moment == "imports":
    time.sleep(0.5)
  elif moment == "compiling":
    run.wait_for(lambda: "compiling" in run.text["err"])
  else:
    run.wait_for(lambda: rows(workdir) >= 2 * 5)  # the first chunk is logged
  code = run.interrupt(presses)
  out, err = run.text["out"], run.text["err"]
  assert code == 130, (code, err[-3000:])
  assert "Traceback" not in err and "Segmentation" not in err and "Fatal" not in err, err
  if moment == "training" and presses == 1:
    assert "stopped by signal 2: saved the state after chunk" in out
  rerun = train(*args)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert rows(workdir) == 2 * 4 * 5  # every update logged exactly once
