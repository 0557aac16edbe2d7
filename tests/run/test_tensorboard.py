"""TensorBoard events: one directory per run and per setting's mean, tagged by metric, no NaN."""

import glob
import os
import struct

import numpy as np
import pytest

from pg.run import tensorboard

pytest.importorskip("tensorboardX")
from tensorboardX.proto import event_pb2  # noqa: E402


def read_scalars(logdir):
  """{run directory (relative): {tag: {step: value}}} from the event files, read as TFRecords
  (length, its CRC, the Event, its CRC) without TensorBoard itself."""
  out = {}
  for path in sorted(glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"),
                               recursive=True)):
    run = os.path.relpath(os.path.dirname(path), logdir)
    data = open(path, "rb").read()
    i = 0
    while i < len(data):
      (n,) = struct.unpack("<Q", data[i:i + 8])
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
      i += 12 + n + 4
      for v in event.summary.value:
        out.setdefault(run, {}).setdefault(v.tag, {})[event.step] = v.simple_value
  return out


SWEEP_LABELS = [{"advantage": a, "learning_rate": lr, "seed": j}
                for a in ("rloo", "grpo") for lr in (1e-3,) for j in (0, 1, 2)]


def write(logdir, labels, metrics, first_update=0):
  writer = tensorboard.open_writer(str(logdir), labels, first_update)
  tensorboard.write_chunk(writer, metrics, first_update)
  tensorboard.close(writer)


def test_sweep_runs_are_tagged_by_setting_and_seed_with_per_setting_means(tmp_path):
  rng = np.random.default_rng(0)
  score_RxK = rng.uniform(size=(6, 4))
  write(tmp_path, SWEEP_LABELS, {"mean_score": score_RxK, "entropy": score_RxK + 1}, 10)
  got = read_scalars(tmp_path)
  settings = ("advantage=grpo,learning_rate=0.001", "advantage=rloo,learning_rate=0.001")
  assert set(got) == {os.path.join(s, leaf) for s in settings
                      for leaf in ("seed_0", "seed_1", "seed_2", "mean")}
  for r, label in enumerate(SWEEP_LABELS):
    run = got[os.path.join(f"advantage={label['advantage']},learning_rate=0.001",
                           f"seed_{label['seed']}")]
    assert set(run) == {"mean_score", "entropy"}  # tagged by the metric's name alone
    np.testing.assert_allclose([run["mean_score"][10 + k] for k in range(4)], score_RxK[r],
                               rtol=1e-6)
  # Each setting's mean is over its own three seeds, not over the whole sweep.
  for s, rows in zip(settings, (slice(3, 6), slice(0, 3))):
    mean = got[os.path.join(s, "mean")]["mean_score"]
    np.testing.assert_allclose([mean[10 + k] for k in range(4)], score_RxK[rows].mean(axis=0),
                               rtol=1e-6)


def test_seed_runs_and_their_mean_sit_at_the_top(tmp_path):
  write(tmp_path, [{"seed": 0}, {"seed": 1}], {"loss": np.array([[1.0, 2.0], [3.0, 4.0]])})
  got = read_scalars(tmp_path)
  assert set(got) == {"seed_0", "seed_1", "mean"}
  assert got["mean"]["loss"] == {0: 2.0, 1: 3.0}


def test_non_finite_values_are_never_written(tmp_path):
  nan, inf = np.nan, np.inf
  score_RxK = np.array([[0.5, nan, 0.1, nan], [0.3, inf, nan, nan]])
  write(tmp_path, [{"seed": 0}, {"seed": 1}], {"mean_score": score_RxK})
  got = read_scalars(tmp_path)
  assert got["seed_0"]["mean_score"] == pytest.approx({0: 0.5, 2: 0.1})
  assert got["seed_1"]["mean_score"] == pytest.approx({0: 0.3})
  # The mean over the seeds finite there; no value where no seed is finite.
  assert got["mean"]["mean_score"] == pytest.approx({0: 0.4, 2: 0.1})
  values = [v for run in got.values() for tag in run.values() for v in tag.values()]
  assert np.all(np.isfinite(values))


def test_setting_names_are_paths_and_distinct():
  runs, means = tensorboard.run_dirs([{"task": "a/b", "seed": 0}, {"task": "a_b", "seed": 0},
                                      {"task": "a/b", "seed": 1}])
  assert runs == ["task=a_b/seed_0", "task=a_b_2/seed_0", "task=a_b/seed_1"]
  assert means == {"task=a_b/mean": [0, 2], "task=a_b_2/mean": [1]}
  assert tensorboard.setting_name({"learning_rate": 3e-4, "seed": 1, "kl": True}) == (
      "kl=True,learning_rate=0.0003")


def test_wrong_shape_is_refused_and_none_writer_is_a_no_op(tmp_path):
  writer = tensorboard.open_writer(str(tmp_path), [{"seed": 0}, {"seed": 1}])
  with pytest.raises(ValueError, match=r"metric 'loss': expected shape \[2 runs"):
    tensorboard.write_chunk(writer, {"loss": np.zeros((3, 2))}, 0)
  tensorboard.close(writer)
  tensorboard.write_chunk(None, {"loss": np.zeros((3, 2))}, 0)
  tensorboard.close(None)


def test_tensorboard_reads_runs_means_and_purges_on_resume(tmp_path):
  event_accumulator = pytest.importorskip(
      "tensorboard.backend.event_processing.event_accumulator")
  labels = [{"learning_rate": 0.01, "seed": 0}, {"learning_rate": 0.01, "seed": 1}]
  write(tmp_path, labels, {"loss": np.array([[1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0]])})
  # A resume from update 2 rewrites updates 2 and 3: the interrupted run's are hidden.
  write(tmp_path, labels, {"loss": np.array([[10.0, 20.0], [30.0, 40.0]])}, first_update=2)
  for run, expected in (("seed_0", [1, 2, 10, 20]), ("mean", [2, 3, 20, 30])):
    acc = event_accumulator.EventAccumulator(str(tmp_path / "learning_rate=0.01" / run))
    acc.Reload()
    assert acc.Tags()["scalars"] == ["loss"]
    events = acc.Scalars("loss")
    assert [e.step for e in events] == [0, 1, 2, 3]
    assert [e.value for e in events] == expected


def test_held_out_scores_are_points_at_their_update(tmp_path):
  """An evaluation's rows become `heldout/<name>` scalars at its update, per run and per
  setting's mean; interval half-widths and missing values are left out."""
  labels = [{"seed": 0}, {"seed": 1}]
  writer = tensorboard.open_writer(str(tmp_path), labels)
  rows = [{"run": 0, "seed": 0, "update": 20, "heldout_greedy": 0.25,
           "heldout_greedy_ci95": 0.1, "heldout_pass@4": None},
          {"run": 1, "seed": 1, "update": 20, "heldout_greedy": 0.75,
           "heldout_greedy_ci95": 0.1, "heldout_pass@4": 0.5}]
  tensorboard.write_points(writer, rows, 20)
  tensorboard.close(writer)
  got = read_scalars(str(tmp_path))
  assert got["seed_0"] == {"heldout/greedy": {20: 0.25}}
  assert got["seed_1"] == {"heldout/greedy": {20: 0.75}, "heldout/pass_at_4": {20: 0.5}}
  assert got["mean"] == {"heldout/greedy": {20: 0.5}, "heldout/pass_at_4": {20: 0.5}}
