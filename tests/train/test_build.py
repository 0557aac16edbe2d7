"""Build once, hand down: `pg.train.build(config)` makes the task and the policy, validated
once per program; runners pass the objects down; nothing writes to a registry at run time."""

import os
import sys

import jax
import pytest

import pg
from pg import tasks, train
from pg.policy import POLICIES, Policy, build_policy
from pg.run import configs, experiment, sweep
from tiny_config import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FORK = os.path.join(ROOT, "experiments", "fork_example")


def registries():
  return (dict(tasks.TASKS), dict(POLICIES), dict(pg.ADVANTAGE_ESTIMATORS),
          dict(pg.POLICY_LOSSES))


@pytest.fixture
def count_builds(monkeypatch):
  """How often a task is checked (once per `build`)."""
  calls = []
  check = tasks.check

  def counted(task, num_prompts):
    calls.append(task.name)
    return check(task, num_prompts)
  monkeypatch.setattr(tasks, "check", counted)
  return calls


def test_build_returns_a_task_and_a_policy():
  task, policy = train.build(tiny())
  assert isinstance(task, tasks.Task) and isinstance(policy, Policy)
  assert policy.vocab_size == task.vocab_size
  assert policy.max_len == task.prompt_len + task.max_new_tokens


def test_a_run_validates_once_and_writes_no_registry(tmp_path, count_builds):
  before = registries()
  experiment.run(tiny(num_chunks=1, updates_per_chunk=1, num_seeds=1), str(tmp_path),
                 verbose=False)
  assert count_builds == ["needle"]
  assert registries() == before


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_a_sweep_builds_each_group_once(tmp_path, count_builds):
  c = tiny(num_chunks=1, updates_per_chunk=1, num_seeds=1, num_prompts=4)
  c.sweep.advantage = ("rloo", "grpo")
  c.sweep.learning_rate = (1e-3, 3e-3)
  sweep.run(c, str(tmp_path), verbose=False, log=lambda *_: None)
  assert count_builds == ["needle", "needle"]  # one per group (structural choice)


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_a_task_object_is_handed_down_not_registered(tmp_path):
  task = tasks.python_task("mine", lambda p, y: float(len(y)) / 4, vocab_size=6, prompt_len=1,
                           max_new_tokens=4, eos_id=4, pad_id=5,
                           sample_prompts=lambda key, n: jax.random.randint(key, (n, 1), 0, 4))
  before = registries()
  c = tiny(num_chunks=1, updates_per_chunk=1, num_seeds=1)
  c.task = {"name": "mine", "options": {}}  # the needle options would be fields nothing reads
  state = experiment.run(c, str(tmp_path), task=task, verbose=False)
  assert int(state.step[0]) == 1 and "mine" not in tasks.TASKS
  assert registries() == before


def test_task_registration_and_options():
  assert tasks.task_options("needle") == {"length": 8, "num_symbols": 4, "exclusive": True}
  with pytest.raises(KeyError, match="config.task.name: unknown task 'chess'; known: "):
    tasks.make_task("chess")
  with pytest.raises(ValueError, match="'needle' is already registered"):
    tasks.register_task("needle")(lambda: None)


def test_policy_registry_checks_names_and_fields():
  with pytest.raises(KeyError, match="config.model.name: unknown model 'rnn'; known: gpt"):
    build_policy({"name": "rnn"}, vocab_size=8, max_len=4)
  with pytest.raises(KeyError, match=r"config.model: field\(s\) \['d_modle'\] are not options "
                                     r"of model 'gpt'"):
    build_policy({"name": "gpt", "d_modle": 8}, vocab_size=8, max_len=4)
  assert set(configs.base_config().model) == {"name", *POLICIES["gpt"].options}


def test_config_imports_bring_a_forks_registrations():
  """A fork's loss, estimator and task, imported by `config.imports` (no sys.path edits); its
  declared hyperparameter gets a field like the built-in ones. (Another test may have imported
  the fork already: its registrations and modules are set aside and put back.)"""
  saved = registries()
  modules = {m: sys.modules.pop(m) for m in list(sys.modules) if m.startswith("pg_imported_")}
  for table, names in ((tasks.TASKS, ["distinct"]), (pg.ADVANTAGE_ESTIMATORS, ["rank"]),
                       (pg.POLICY_LOSSES, ["w_reinforce"])):
    for name in names:
      table.pop(name, None)
  try:
    c = configs.load_config_file(os.path.join(FORK, "rank_kl_config.py"))
    assert c.imports and all(path.startswith(FORK) for path in c.imports)
    assert "w_reinforce_lambda" in c.hparams and "w_reinforce_lambda" in c.sweep
    task, policy = train.build(c)
    assert task.name == "distinct" and "rank" in pg.ADVANTAGE_ESTIMATORS
    train.build(c)  # importing again registers nothing twice
  finally:
    for table, old in zip((tasks.TASKS, POLICIES, pg.ADVANTAGE_ESTIMATORS, pg.POLICY_LOSSES),
                          saved):
      table.clear()
      table.update(old)
    for name in [m for m in sys.modules if m.startswith("pg_imported_")]:
      sys.modules.pop(name)
    sys.modules.update(modules)
  with pytest.raises(ImportError, match="config.imports: cannot import 'no_such_module'"):
    train.build(tiny(imports=("no_such_module",)))
  with pytest.raises(FileNotFoundError, match="config.imports: no file 'missing.py'"):
    train.build(tiny(imports=("missing.py",)))
