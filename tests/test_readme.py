"""The README's commands and its fork example stay true."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np

import pg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def python_block(containing):
  (code,) = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if containing in b]
  return code


def test_ci_runs_the_readme_test_command_exactly():
  test_command = 'pip install -e ".[test]" && pytest'
  assert f"```bash\n{test_command}\n```" in README
  ci_lines = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read().splitlines()
  assert test_command in ci_lines
  assert "```bash\npip install -e . && python experiments/train.py\n```" in README


def test_fork_example_registers_and_runs():
  code = python_block("register_advantage")
  saved = dict(pg.ADVANTAGE_ESTIMATORS), dict(pg.POLICY_LOSSES)
  try:
    exec(code, {})  # noqa: S102 - our own README
    inputs = pg.AdvantageInputs(jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.ones((4, 3)))
    out = pg.get_advantage("my_baseline")(inputs, pg.make_hparams(), pg.init_baseline_state())
    np.testing.assert_allclose(out.advantages_BxT[:, 0], [-1.5, -0.5, 0.5, 1.5])
    # The KL penalty it never reads is still paid: −β Σ_{s≥t} kl_s on each token.
    with_kl = pg.get_advantage("my_baseline")(inputs.replace(kl_BxT=jnp.ones((4, 3))),
                                              pg.make_hparams(kl_coef=0.1), None)
    np.testing.assert_allclose(with_kl.advantages_BxT - out.advantages_BxT,
                               jnp.tile(jnp.array([-0.3, -0.2, -0.1]), (4, 1)), atol=1e-6)
    ones = jnp.ones((4, 3))
    hp = pg.make_hparams()
    assert float(hp["my_eps"]) == np.float32(0.2)  # the loss's own swept value
    loss, _ = pg.get_policy_loss("my_loss")(pg.PolicyLossInputs(ones, ones, ones, ones), hp)
    assert loss.shape == (4, 3)
  finally:
    pg.ADVANTAGE_ESTIMATORS.clear(); pg.ADVANTAGE_ESTIMATORS.update(saved[0])
    pg.POLICY_LOSSES.clear(); pg.POLICY_LOSSES.update(saved[1])


def test_python_reward_example_plugs_in():
  code = python_block("python_task")
  from pg import tasks
  saved = dict(tasks.TASKS)
  tasks.TASKS.pop("distinct", None)  # the fork example registers the same name (another test)
  try:
    exec(code, {})  # noqa: S102 - our own README
    task = tasks.make_task("distinct")
    prompts = task.sample_prompts(jax.random.PRNGKey(0), 2)
    tokens = jnp.array([[0, 1, 2, 3, 10, 11, 11, 11], [5] * 8])
    mask = jnp.array([[1.0] * 5 + [0.0] * 3, [1.0] * 8])
    np.testing.assert_allclose(jax.jit(task.score)(prompts, tokens, mask), [4 / 8, 1 / 8])
  finally:
    tasks.TASKS.clear(); tasks.TASKS.update(saved)
