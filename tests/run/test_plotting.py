"""Figures and tables: bands inside the metric's range and labelled, categorical sweeps as
unjoined points, NaN entries left out (never "nan ± nan"), and the toy tasks' score ranges."""

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy import stats

from pg import tasks
from pg.run import plotting
from pg.run.sweep import results


def band_ys(ax):
  """Every y of the bands (fill_between polygons) drawn on `ax`."""
  return np.concatenate([p.vertices[:, 1] for c in ax.collections for p in c.get_paths()])


def noisy_near(level, seeds=4, updates=30, spread=0.3, seed=0):
  rng = np.random.default_rng(seed)
  return np.clip(level + spread * rng.standard_normal((seeds, updates)), 0.0, 1.0)


def test_mean_and_ci_use_the_finite_seeds_per_update():
  x = np.array([[0.1, np.nan, np.nan], [0.3, 0.5, np.nan], [0.8, 0.7, np.nan]])
  mean, half = plotting.mean_and_ci(x)
  assert mean[0] == pytest.approx(0.4) and mean[1] == pytest.approx(0.6)
  t2, t1 = stats.t.ppf(0.975, 2), stats.t.ppf(0.975, 1)
  assert half[0] == pytest.approx(t2 * np.std([0.1, 0.3, 0.8], ddof=1) / np.sqrt(3))
  assert half[1] == pytest.approx(t1 * np.std([0.5, 0.7], ddof=1) / np.sqrt(2))
  assert np.isnan(mean[2]) and np.isnan(half[2])
  assert plotting.mean_and_ci(np.array([[0.5, 0.2]]))[1].tolist() == [0.0, 0.0]


def test_smooth_averages_finite_values_only():
  x = np.array([[1.0, np.nan, 3.0, np.nan, np.nan]])
  np.testing.assert_allclose(plotting.smooth(x, 2), [[1.0, 1.0, 3.0, 3.0, np.nan]])
  np.testing.assert_allclose(plotting.smooth(np.arange(5.0)[None], 2), [[0, 0.5, 1.5, 2.5, 3.5]])


def test_bands_stay_inside_the_metric_bounds():
  curves = {"mean_score": noisy_near(0.95), "entropy": noisy_near(0.05)}
  bounds = {"mean_score": (0.0, 1.0), "entropy": (0.0, None)}
  unclipped = plotting.curves_figure({"rloo": curves}, ("mean_score", "entropy"))
  ys = [band_ys(ax) for ax in unclipped.axes]
  assert ys[0].max() > 1.0 and ys[1].min() < 0.0  # the intervals themselves cross them
  fig = plotting.curves_figure({"rloo": curves}, ("mean_score", "entropy"), bounds=bounds)
  score_ax, entropy_ax = fig.axes[:2]
  assert 0.0 <= band_ys(score_ax).min() and band_ys(score_ax).max() <= 1.0
  assert band_ys(entropy_ax).min() >= 0.0
  plt.close("all")


def test_band_label_states_the_interval_and_the_seeds_with_values():
  x = noisy_near(0.5)
  x[3] = np.nan  # a seed whose every update was skipped
  fig = plotting.curves_figure({"rloo": {"mean_score": x}}, ("mean_score",), title="needle_rloo")
  labels = fig.axes[0].get_legend_handles_labels()[1]
  assert "rloo: 95% t-interval over 3 seeds" in labels
  assert "rloo: mean of 3 seeds" in labels
  assert fig._suptitle.get_text() == "needle_rloo"
  plt.close(fig)


def test_a_metric_without_finite_values_says_so(tmp_path):
  curves = {"mean_score": noisy_near(0.5), "kl_to_ref": np.full((4, 30), np.nan)}
  fig = plotting.curves_figure({"rloo": curves}, ("mean_score", "kl_to_ref"))
  assert [t.get_text() for t in fig.axes[1].texts] == ["no finite values"]
  plt.close(fig)
  path = tmp_path / "curves.png"
  plotting.plot_curves({"rloo": curves}, str(path), metrics=("mean_score", "kl_to_ref"),
                       bounds={"mean_score": (0, 1)}, title="t")
  assert path.stat().st_size > 0


def test_summary_table_leaves_nan_out_and_never_prints_nan():
  x = np.array([[0.2, 0.4, np.nan, 0.6], [0.4, np.nan, np.nan, 0.8], [np.nan] * 4])
  table = plotting.summary_table(
      {"rloo": {"s": x, "none": np.full((3, 4), np.nan)}},
      [("last half", "s", (0.5, 1.0)), ("all", "s", (0.0, 1.0)), ("empty", "none", (0, 1))])
  row = table.splitlines()[2]
  mean, half = plotting.mean_and_ci(np.array([[0.6], [0.8]]))
  assert f"{mean[0]:.3f} ± {half[0]:.3f} (2 of 3 seeds)" in row
  assert "| —" in row and "nan" not in table
  one = plotting.summary_table({"a": {"s": np.array([[0.25, 0.75]])}}, [("s", "s", (0, 1))])
  assert "0.500 (1 seed)" in one


def test_task_score_ranges_hold_and_are_reached():
  key = jax.random.PRNGKey(0)
  for name, options in (("addition", {}), ("addition", {"partial_credit": False}),
                        ("needle", {}), ("needle", {"exclusive": False}), ("target_token", {}),
                        ("count_up", {})):
    task = tasks.make_task(name, **options)
    lo, hi = task.score_range
    prompts = task.sample_prompts(key, 64)
    tokens = jax.random.randint(key, (64, task.max_new_tokens), 0, task.vocab_size)
    for mask in (jnp.ones(tokens.shape), jnp.zeros(tokens.shape)):
      scores = np.asarray(task.score(prompts, tokens, mask))
      assert lo <= scores.min() and scores.max() <= hi, name
  # The exclusive needle's lowest score: the symbol everywhere but at the asked position.
  task = tasks.make_task("needle", length=4, num_symbols=2)
  assert task.score_range == (-1.0, 1.0)
  prompts = jnp.array([[2 + 1, 0]])  # position 1, symbol 0
  tokens = jnp.array([[0, 1, 0, 0]])
  assert float(task.score(prompts, tokens, jnp.ones((1, 4)))[0]) == -1.0
  bounds = plotting.metric_bounds(task)
  assert bounds["entropy"] == (0.0, pytest.approx(np.log(8)))
  assert bounds["response_length"] == (0.0, 4.0) and "kl_to_ref" not in bounds


def sweep_rows(values, name, level, seeds=3, updates=20, nan_seed=None):
  rows = []
  rng = np.random.default_rng(1)
  for v, lv in zip(values, level):
    for j in range(seeds):
      for u in range(updates):
        score = float(np.clip(lv + 0.4 * rng.standard_normal(), 0, 1))
        rows.append({"seed": j, "update": u, name: v,
                     "mean_score": np.nan if j == nan_seed else score})
  return rows


def test_sweep_categorical_values_are_points_with_error_bars_not_lines():
  rows = sweep_rows(("rloo", "grpo", "none"), "advantage", (0.95, 0.5, 0.05))
  summary = results.summarize(rows, (), ("advantage",))
  fig = results.against_figure(summary, "advantage", ("advantage",), (0.0, 1.0), "sweep_lr")
  for ax in fig.axes:
    assert ax.containers and all(line.get_linestyle() == "None" for line in ax.get_lines())
    bars = np.concatenate([seg[:, 1] for c in ax.collections for seg in c.get_segments()])
    assert 0.0 <= bars.min() and bars.max() <= 1.0  # error bars clipped to the score range
    assert any("95% t-interval over 3 seeds" in t for t in ax.get_legend_handles_labels()[1])
  assert fig._suptitle.get_text() == "sweep_lr: score against advantage"
  plt.close(fig)
  booleans = results.summarize(sweep_rows((True, False), "flag", (0.5, 0.6)), (), ("flag",))
  assert results.categorical(booleans, "flag")


def test_sweep_numeric_values_are_lines_with_clipped_labelled_bands():
  rows = sweep_rows((1e-3, 3e-3, 1e-2), "learning_rate", (0.97, 0.9, 0.03), nan_seed=2)
  summary = results.summarize(rows, ("learning_rate",), ())
  assert {s.final.seeds for s in summary} == {2}  # the all-NaN seed is left out
  fig = results.against_figure(summary, "learning_rate", ("learning_rate",), (0.0, 1.0))
  ax = fig.axes[0]
  (line,) = ax.get_lines()
  assert line.get_linestyle() == "-" and len(line.get_xdata()) == 3
  ys = band_ys(ax)
  assert 0.0 <= ys.min() and ys.max() <= 1.0
  assert "95% t-interval over 2 seeds" in ax.get_legend_handles_labels()[1]
  plt.close(fig)


def test_sweep_results_without_finite_scores_show_a_dash(tmp_path):
  rows = sweep_rows((1e-3, 1e-2), "learning_rate", (0.5, 0.5), seeds=2)
  for r in rows:
    if r["learning_rate"] == 1e-2:
      r["mean_score"] = np.nan
  summary = results.summarize(rows, ("learning_rate",), ())
  lines = []
  results.write_results(str(tmp_path), rows, summary, ("learning_rate",), (),
                        log=lines.append, score_range=(0.0, 1.0), title="sweep")
  md = (tmp_path / "results.md").read_text()
  assert "nan" not in md.lower().replace("non-finite", "")
  (bad,) = [line for line in md.splitlines() if line.startswith("| 0.01 ")]
  assert bad.count("—") == 3
  assert md.splitlines()[2].startswith("| 0.001 ")  # a setting with scores ranks first
  csv_text = (tmp_path / "results.csv").read_text()
  assert "nan" not in csv_text.lower()
  for name in ("curves.png", "score_vs_learning_rate.png"):
    assert (tmp_path / name).stat().st_size > 0
