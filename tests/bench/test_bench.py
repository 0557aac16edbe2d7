"""The benchmarks run and report what they say (speed targets live in the scripts, never in a
timed test): `pg.bench` on shrunk problems, and the scripts in experiments/ that call it."""

import importlib.util
import os

import numpy as np
import pytest

from pg import train
from pg.bench import core, matmul, scaling, timing
from pg.bench import train as bench
from pg.run import configs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = ("bench_train", "bench_scaling", "bench_core", "bench_matmul_bound")


def load_script(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "experiments",
                                                                   f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def tiny():
  c = configs.base_config()
  c.task.name = "target_token"
  c.task.options = {"vocab_size": 8, "prompt_len": 2, "length": 4, "target": 3}
  c.model.update(num_layers=1, d_model=16, num_heads=2)
  c.num_prompts, c.group_size, c.updates_per_chunk = 4, 2, 2
  return c


# --------------------------------------------------------------------------------------------
# Timers and helpers (no compile of a train program).


def test_best_time_warms_up_once_then_keeps_the_fastest_call():
  calls = []
  seconds = timing.best_time(lambda x: calls.append(x) or x, 1.0, repeats=4)
  assert len(calls) == 5 and 0 <= seconds < 1  # one untimed call, then 4 timed


def test_call_times_times_the_calls_after_the_warm_up_and_returns_the_last_output():
  calls = []
  seconds, out = timing.call_times(lambda: calls.append(len(calls)) or len(calls), repeats=3,
                                   warmup=2)
  assert len(seconds) == 3 and all(s >= 0 for s in seconds)
  assert calls == [0, 1, 2, 3, 4] and out == 5


def test_chunk_times_feeds_each_call_the_last_state_and_keeps_the_timed_metrics():
  chunk = lambda state: (state + 1, {"step": state})
  seconds, metrics, state = timing.chunk_times(chunk, 10, repeats=2)
  assert len(seconds) == 2 and state == 13
  assert [m["step"] for m in metrics] == [11, 12]  # the warm-up call (10) is not timed


def test_timed_returns_the_result_and_its_seconds():
  out, seconds = timing.timed(lambda a, b: a + b, 2, 3)
  assert out == 5 and seconds >= 0


def test_changed_sets_dotted_fields_on_a_copy():
  config = tiny().lock()
  new = bench.changed(config, num_seeds=3, **{"model.d_model": 32, "task.options": {"length": 5}})
  assert (new.num_seeds, new.model.d_model, new.task.options.to_dict()) == (3, 32, {"length": 5})
  assert (config.num_seeds, config.model.d_model, config.task.options.length) == (4, 16, 4)
  assert new.is_locked


def test_build_group_is_the_config_built_once():
  group = bench.build_group(tiny())
  assert group.name == "base" and group.task.max_new_tokens == 4
  assert group.policy.vocab_size == 8
  with pytest.raises(ValueError, match="num_prompts"):
    bench.build_group(bench.changed(tiny(), num_prompts=0))


@pytest.mark.parametrize("name", sorted(scaling.AXES))
def test_every_scaling_axis_sets_fields_the_config_accepts(name):
  values, quick_values, fields = scaling.AXES[name]
  for v in values + quick_values:
    train.build(bench.changed(tiny(), **fields(v)))


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_print_their_help(script, capsys, monkeypatch):
  module = load_script(script)
  monkeypatch.setattr("sys.argv", [f"{script}.py", "--help"])
  with pytest.raises(SystemExit) as exit_:
    module.main()
  assert exit_.value.code == 0
  out = " ".join(capsys.readouterr().out.split())  # argparse wraps the description
  assert out.startswith(f"usage: {script}.py") and module.__doc__.splitlines()[0] in out


# --------------------------------------------------------------------------------------------
# pg.bench.core: GAE and log-probs.


def test_gae_numpy_agrees_with_pg_and_a_disagreement_is_caught():
  import pg
  rewards_BxT, values_BxT, mask_BxT = core.make_gae_inputs(3, 7, seed=1)
  mask_BxT[0, 2] = 0.0  # a hole inside the generated prefix carries through
  ref_BxT = core.gae_numpy(rewards_BxT, values_BxT, mask_BxT, 0.9, 0.8)
  adv_BxT = pg.generalized_advantage_estimation(rewards_BxT, values_BxT, mask_BxT, 0.9, 0.8)
  errors = core.check_gae_agree({"scan": adv_BxT}, ref_BxT)
  assert errors["scan"] < 1e-5
  with pytest.raises(AssertionError, match="GAE off disagrees"):
    core.check_gae_agree({"off": ref_BxT + 1.0}, ref_BxT)


def test_max_rel_diff_is_relative_to_the_reference_scale():
  a = {"x": np.array([1.0, 2.0]), "y": np.array(100.0)}
  b = {"x": np.array([1.0, 4.0]), "y": np.array(101.0)}
  assert core.max_rel_diff(a, b) == pytest.approx(0.5)


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_bench_core_prints_both_tables_at_tiny_sizes(capsys):
  load_script("bench_core").main(["--quick", "--repeats", "1", "--lp-repeats", "1", "--gae-B",
                                  "2", "--B", "1", "--T", "4", "--V", "16", "--chunks", "8"])
  out = capsys.readouterr().out
  assert "| B | T | impl | median ms | compile ms | max abs diff vs NumPy |" in out
  assert out.count("| 2 | 1024 | ") == 3  # scan, associative scan, NumPy
  assert "| float32 | fwd+bwd | chunk 8 | " in out and "Total wall time" in out


# --------------------------------------------------------------------------------------------
# Programs that compile a real train step (slow).


@pytest.mark.slow
def test_update_throughput_counts_every_generated_token():
  group = bench.build_group(bench.changed(tiny(), num_seeds=2))
  row = bench.update_throughput(group, repeats=1, peak=1e11)
  assert row["seeds"] == 2 and row["s/update"] > 0
  # Every generated token is counted: 2 seeds × 8 samples × at most 4 tokens per update.
  assert 0 < row["tokens/s"] * row["s/update"] <= 2 * 8 * 4
  assert row["model GFLOP/s"] > 0 and row["temp MiB"] >= 0


@pytest.mark.slow
def test_bench_sweep_compares_one_program_with_runs_one_by_one(capsys):
  rows = bench.report_sweep(tiny(), [1e-3, 1e-2], num_seeds=1, repeats=1)
  assert [r["compiles"] for r in rows] == [1, 1, 2]
  one_program, reused, recompiled = rows
  # Same work: seed-updates/s is the number of runs × updates over the measured seconds.
  for r in rows:
    assert r["seed-updates/s"] == pytest.approx(2 / r["s/update"])
  assert recompiled["s/update"] > reused["s/update"]  # adds 2 compiles to the same runs
  out = capsys.readouterr().out
  assert "| one program (2 rates × 1 seeds) | 1 |" in out
  assert "## 2 runs (2 learning rates × 1 seeds), 2 updates each" in out


@pytest.mark.slow
def test_bench_train_main_applies_its_overrides(capsys, monkeypatch):
  script = load_script("bench_train")
  monkeypatch.setattr(script, "load_config", lambda path: tiny().lock())
  monkeypatch.setattr("sys.argv", ["bench_train.py", "--seeds", "2", "--repeats", "1",
                                   "--grad-accum-steps", "2", "--peak-size", "128"])
  script.main()
  out = capsys.readouterr().out
  assert "model 1L×16, 4×2 samples per update, 2 updates per chunk" in out
  assert "(128² @ 128², best of 10, default precision); grad_accum_steps 2" in out
  assert "| seeds | s/update | tokens/s | model GFLOP/s | % of peak |" in out
  assert "\n| 2 | " in out  # the row of 2 seeds


@pytest.mark.slow
def test_bench_scaling_splits_an_update_into_micro_batches_until_it_fits():
  config = tiny()  # 4 prompts × 2 samples: micro-batches of whole groups go up to 4
  group, _, _ = scaling.fit_in_memory(config, budget=2**40)
  assert group.config.grad_accum_steps == 1
  group, _, compiled = scaling.fit_in_memory(config, budget=0)
  assert group.config.grad_accum_steps == 4  # 8 samples in groups of 2: no smaller split
  assert config.grad_accum_steps == 1  # the caller's config is left as it is
  assert compiled.memory_analysis().temp_size_in_bytes > 0


@pytest.mark.slow
def test_scaling_and_memory_tables_have_a_row_per_value():
  """(4 seeds of tiny(): the update fit_in_memory's test compiled, from the compile cache.)"""
  text = scaling.scaling_table(tiny(), "seeds", (4,), lambda s: {"num_seeds": s}, repeats=1)
  assert text.splitlines()[0] == ("| seeds | update s | sampling s | rest s | sampling share "
                                  "| micro-batches |")
  (row,) = text.splitlines()[2:]
  assert row.startswith("| 4 | ") and row.endswith(" | 1 |")  # fits in one micro-batch
  text = scaling.memory_table(tiny(), vocab_size=64, length=8, chunk_sizes=(16,))
  assert text.splitlines()[2].startswith("| 16 | ")


@pytest.mark.slow
def test_matmul_bound_covers_the_update_s_matmul_flops(capsys):
  """The bound times the products pg.train.flops counts for the dense layers and the LM head:
  its FLOPs are the update's minus attention (QKᵀ, AV) and the prompt prefill."""
  config = tiny()
  task, policy = train.build(config)
  rows = matmul.bound(config, task, policy)
  assert [r[0] for r in rows] == ["trainer forward", "trainer input gradient",
                                  "trainer weight gradient", "sampling: 4 decode steps"]
  assert all(s > 0 for _, s, _ in rows)
  m, B = config.model, config.num_prompts * config.group_size
  P, T = task.prompt_len, task.max_new_tokens
  trunk = lambda a: policy.token_flops(a).trunk
  attention = lambda a: m.num_layers * 4 * m.d_model * a
  head = policy.token_flops(0).head
  trained = (config.num_prompts * P * (trunk(P) - attention(P))
             + B * (T - 1) * (trunk(P + T - 1) - attention(P + T - 1)) + B * T * head)
  sampled = B * T * (trunk(P + T + 1) - attention(P + T + 1) + head)
  assert sum(f for _, _, f in rows) == pytest.approx(3 * trained + sampled)
  matmul.report(config)
  out = capsys.readouterr().out
  assert "| matmuls of | ms alone | GFLOP | GFLOP/s |" in out and "| trainer forward | " in out
  assert "generated tokens/s with everything else free." in out
