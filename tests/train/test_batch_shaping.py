"""Dynamic sampling, the overlong penalty and truncation masking inside the compiled step."""

import numpy as np
import pytest

from pg import train
from tiny_config import run_chunks, tiny


@pytest.mark.slow  # a whole training run; default suite under 9 min, CI runs it
def test_dynamic_sampling_keeps_informative_groups_and_logs_the_share():
  _, m, _ = run_chunks(tiny(oversample=3), 1)
  assert np.all(m["dynamic_kept_fraction"] >= m["dynamic_informative_share"] - 1e-6)
  assert np.all((m["dynamic_kept_fraction"] >= 0) & (m["dynamic_kept_fraction"] <= 1))
  assert np.all(np.isfinite(m["loss"]))


@pytest.mark.slow  # a whole training run; default suite under 9 min, CI runs it
def test_the_overlong_penalty_is_logged_and_leaves_mean_score_the_tasks():
  c = tiny(overlong_buffer=2)
  c.task.name, c.task.options = "count_up", {}
  _, m, _ = run_chunks(c, 1)
  assert np.all(m["overlong_penalty"] <= 0) and np.all(m["overlong_penalty"] >= -1)
  assert np.any(m["overlong_penalty"] < 0)
  assert np.all((m["mean_score"] >= 0) & (m["mean_score"] <= 1))  # the task's own score


@pytest.mark.slow  # a whole training run; default suite under 9 min, CI runs it
def test_truncated_responses_leave_the_loss():
  """target_token has no end token, so every response is truncated: with mask_truncated every
  token leaves the loss and nothing moves."""
  c = tiny(mask_truncated=True, num_seeds=1)
  c.task.name, c.task.options = "target_token", {}
  _, m, _ = run_chunks(c, 1)
  assert np.all(m["truncated_fraction"] == 1.0)
  np.testing.assert_allclose(m["grad_norm"], 0.0)


@pytest.mark.parametrize("fields,match", [
    ({"oversample": 0}, "config.oversample must be an int >= 1"),
    ({"oversample": 2, "group_size": 1, "advantage": "none"}, "needs config.group_size >= 2"),
    ({"overlong_buffer": 99}, "config.overlong_buffer must be an int in"),
])
def test_bad_shaping_settings_are_refused_by_name(fields, match):
  with pytest.raises(ValueError, match=match):
    train.build(tiny(**fields))
