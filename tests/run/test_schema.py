"""A config sets only fields a program reads: misspelt ones are refused with the closest names."""

import glob
import os

import ml_collections
import pytest

from pg.run import configs, schema
from pg.rlhf import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def base(**fields):
  c = configs.base_config()
  for path, value in fields.items():
    *parents, leaf = path.split("__")
    block = c
    for p in parents:
      block = block[p]
    block[leaf] = value
  return c


@pytest.mark.parametrize("field, value, hint", [
    ("num_promts", 64, r"config.num_promts is not a field pg reads.*did you mean "
                       r"config.num_prompts\?"),
    ("advantage_estimator", "grpo", r"config.advantage_estimator .*did you mean config.advantage"),
    ("lerning_rate", 1e-3, r"did you mean config.hparams.learning_rate\?"),
    ("hparams__lerning_rate", 1e-3, r"did you mean config.hparams.learning_rate\?"),
    ("model__d_modle", 8, r"config.model.d_modle .*did you mean config.model.d_model\?"),
])
def test_a_misspelt_field_is_refused_with_the_closest_names(field, value, hint):
  with pytest.raises(KeyError, match=hint):
    schema.check(base(**{field: value}))


def test_the_message_is_one_line_and_names_no_sweep_field_for_a_plain_one():
  with pytest.raises(KeyError) as e:
    schema.check(base(lerning_rate=1e-3))
  message = e.value.args[0]
  assert "\n" not in message and "sweep" not in message


def test_task_options_are_checked_against_the_tasks_own():
  c = base()
  c.task.name = "needle"
  c.task.options = {"length": 6}
  schema.check(c)  # a declared option
  c.task.options = {"lenght": 6}
  with pytest.raises(KeyError, match=r"config.task.options.lenght .*task 'needle' takes options "
                                     r"\['exclusive', 'length', 'num_symbols'\].*did you mean "
                                     r"config.task.options.length\?"):
    schema.check(c)


def test_the_rlhf_block_is_known_only_to_the_pipeline_that_declares_it():
  c = configs.load_config_file(os.path.join(ROOT, "configs", "rlhf.py"))
  blocks = {"rlhf": dict.fromkeys(pipeline.BLOCK_FIELDS)}
  schema.check(c, blocks)
  with pytest.raises(KeyError, match=r"config.rlhf is not a field pg reads"):
    schema.check(c)  # a training run does not read it
  c.rlhf.pretrain_stpes = 10
  with pytest.raises(KeyError, match=r"config.rlhf.pretrain_stpes .*config.rlhf.pretrain_steps"):
    schema.check(c, blocks)


CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 + glob.glob(os.path.join(ROOT, "experiments", "fork_example", "*_config.py")))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_shipped_config_sets_only_known_fields(path):
  c = configs.load_config_file(path)
  if "enumerable" in path:  # the estimator demo's own config: checked against itself
    schema.check_against(c, configs.load_config_file(path))
  else:
    schema.check(c, {"rlhf": dict.fromkeys(pipeline.BLOCK_FIELDS)} if "rlhf" in c else None)


def test_a_programs_own_config_is_checked_against_its_default():
  reference = ml_collections.ConfigDict({"num_updates": 10, "learning_rate": 0.1})
  c = ml_collections.ConfigDict({"num_updates": 10, "learnig_rate": 0.1})
  with pytest.raises(KeyError, match=r"config.learnig_rate .*did you mean config.learning_rate"):
    schema.check_against(c, reference)


def test_experiment_run_refuses_before_touching_the_workdir(tmp_path):
  from pg.run import experiment
  c = base(num_promts=64)
  with pytest.raises(KeyError, match="num_promts"):
    experiment.run(c, str(tmp_path / "w"), verbose=False)
  assert not (tmp_path / "w").exists()
