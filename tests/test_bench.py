"""The benchmark scripts run and report what they say (speed targets live in the scripts, never
in a timed test)."""

import importlib.util
import os

import pytest

from pg import configs

pytestmark = pytest.mark.slow  # compiles real programs; runs in CI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def test_bench_train_rows(capsys):
  bench = load_script("bench_train")
  row = bench.bench(tiny(), num_seeds=2, repeats=1, peak=1e11)
  assert row["seeds"] == 2 and row["s/update"] > 0
  # Every generated token is counted: 2 seeds × 8 samples × at most 4 tokens per update.
  assert 0 < row["tokens/s"] * row["s/update"] <= 2 * 8 * 4
  assert row["model GFLOP/s"] > 0 and row["temp MiB"] >= 0


def test_bench_sweep_compares_one_program_with_runs_one_by_one(capsys):
  bench = load_script("bench_train")
  rows = bench.bench_sweep(tiny(), [1e-3, 1e-2], num_seeds=2, repeats=1)
  assert [r["compiles"] for r in rows] == [1, 1, 4]
  one_program, reused, recompiled = rows
  # Same work: seed-updates/s is the number of runs × updates over the measured seconds.
  for r in rows:
    assert r["seed-updates/s"] == pytest.approx(4 / r["s/update"])
  assert recompiled["s/update"] > reused["s/update"]  # adds 4 compiles to the same runs
  out = capsys.readouterr().out
  assert "| one program (2 rates × 2 seeds) | 1 |" in out


def test_bench_train_main_applies_its_overrides(capsys, monkeypatch):
  bench = load_script("bench_train")
  monkeypatch.setattr(bench, "load_config", lambda path: tiny().lock())
  monkeypatch.setattr("sys.argv", ["bench_train.py", "--seeds", "2", "--repeats", "1",
                                   "--grad-accum-steps", "2", "--peak-size", "128"])
  bench.main()
  out = capsys.readouterr().out
  assert "(128² @ 128², best of 10, default precision); grad_accum_steps 2" in out
  assert "\n| 2 | " in out  # the row of 2 seeds


def test_bench_scaling_splits_an_update_into_micro_batches_until_it_fits():
  bench = load_script("bench_scaling")
  config = tiny()  # 4 prompts × 2 samples: micro-batches of whole groups go up to 4
  bench.fit_in_memory(config, budget=2**40)
  assert config.grad_accum_steps == 1
  _, compiled = bench.fit_in_memory(config, budget=0)
  assert config.grad_accum_steps == 4  # 8 samples in groups of 2: no smaller whole-group split
  assert compiled.memory_analysis().temp_size_in_bytes > 0


def test_matmul_bound_covers_the_update_s_matmul_flops():
  """The bound times the products pg.flops counts for the dense layers and the LM head: its
  FLOPs are the update's minus attention (QKᵀ, AV) and the prompt prefill."""
  from pg import flops
  from pg.tasks import make_task
  bench = load_script("bench_matmul_bound")
  config = tiny()
  rows = bench.bound(config)
  assert [r[0] for r in rows] == ["trainer forward", "trainer input gradient",
                                  "trainer weight gradient", "sampling: 4 decode steps"]
  assert all(s > 0 for _, s, _ in rows)
  task = make_task(config.task.name, **config.task.options)
  m, B = config.model, config.num_prompts * config.group_size
  P, T = task.prompt_len, task.max_new_tokens
  trunk = lambda a: flops.forward_flops_per_token(m.d_model, m.num_layers, task.vocab_size, a,
                                                  with_head=False)
  attention = lambda a: m.num_layers * 4 * m.d_model * a
  head = 2 * m.d_model * task.vocab_size
  trained = (config.num_prompts * P * (trunk(P) - attention(P))
             + B * (T - 1) * (trunk(P + T - 1) - attention(P + T - 1)) + B * T * head)
  sampled = B * T * (trunk(P + T + 1) - attention(P + T + 1) + head)
  assert sum(f for _, _, f in rows) == pytest.approx(3 * trained + sampled)


def test_best_time_warms_up_once_then_keeps_the_fastest_call():
  from pg.timing import best_time
  calls = []
  seconds = best_time(lambda x: calls.append(x) or x, 1.0, repeats=4)
  assert len(calls) == 5 and 0 <= seconds < 1  # one untimed call, then 4 timed
