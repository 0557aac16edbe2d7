"""The built-in tasks score what they say; Python rewards work under jit and vmap."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pg.policy import gpt as model
from pg.policy import sampler
from pg import tasks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_tasks_score_what_they_say():
  add = tasks.make_task("addition", num_digits=2)
  prompt = jnp.array([[1, 2, 10, 3, 9, 11]])  # 12 + 39 = 051, written reversed: 1 5 0
  assert float(add.score(prompt, jnp.array([[1, 5, 0, 12]]), jnp.ones((1, 4)))[0]) == 1.0
  assert float(add.score(prompt, jnp.array([[1, 5, 1, 12]]), jnp.ones((1, 4)))[0]) == 0.75
  strict = tasks.make_task("addition", num_digits=2, partial_credit=False)
  assert float(strict.score(prompt, jnp.array([[1, 5, 1, 12]]), jnp.ones((1, 4)))[0]) == 0.0
  needle = tasks.make_task("needle", length=4, num_symbols=3)
  p = jnp.array([[3 + 2, 1]])  # put symbol 1 at position 2
  assert float(needle.score(p, jnp.array([[0, 0, 1, 0]]), jnp.ones((1, 4)))[0]) == 1.0
  assert float(needle.score(p, jnp.array([[1, 0, 1, 0]]), jnp.ones((1, 4)))[0]) == \
      pytest.approx(1 - 1 / 3)  # exclusive: symbol 1 elsewhere costs
  assert float(needle.score(p, jnp.array([[0, 0, 1, 0]]), jnp.array([[1., 1., 0., 0.]]))[0]) == 0


def test_addition_reports_exact_accuracy_beside_partial_credit():
  prompt = jnp.array([[3, 10, 4, 11]])  # 3 + 4 = 07, written reversed: 7 0
  mask = jnp.ones((1, 3))
  for partial_credit in (True, False):
    add = tasks.make_task("addition", num_digits=1, partial_credit=partial_credit)
    right = add.extra_metrics(prompt, jnp.array([[7, 0, 12]]), mask)
    carry_then_end = add.extra_metrics(prompt, jnp.array([[5, 0, 12]]), mask)
    assert {k: float(v[0]) for k, v in right.items()} == {"exact_accuracy": 1.0,
                                                          "partial_credit": 1.0}
    assert float(carry_then_end["exact_accuracy"][0]) == 0.0
    assert float(carry_then_end["partial_credit"][0]) == pytest.approx(2 / 3)
  # A digit where the end token belongs is not exact; a cut-off answer loses its masked positions.
  add = tasks.make_task("addition", num_digits=2)
  prompt = jnp.array([[1, 2, 10, 3, 9, 11], [9, 9, 10, 9, 9, 11]])  # 051 -> 1 5 0; 198 -> 8 9 1
  tokens = jnp.array([[1, 5, 0, 3], [8, 9, 1, 12]])
  mask = jnp.array([[1., 1., 1., 1.], [1., 1., 0., 0.]])
  metrics = jax.jit(add.extra_metrics)(prompt, tokens, mask)
  np.testing.assert_allclose(metrics["exact_accuracy"], [0.0, 0.0])
  np.testing.assert_allclose(metrics["partial_credit"], [0.75, 0.5])
  np.testing.assert_allclose(metrics["partial_credit"], add.score(prompt, tokens, mask))


def test_python_reward_works_under_jit_and_vmap():
  task = tasks.make_task("count_up")
  prompts = jnp.array([[[3]], [[9]]])
  responses = jnp.array([[[4, 5, 6, 7, 8, 9, 0, 1]], [[0, 1, 2, 10, 11, 11, 11, 11]]])
  mask = jnp.array([[[1.0] * 8], [[1.0] * 4 + [0.0] * 4]])
  scores = jax.jit(jax.vmap(task.score))(prompts, responses, mask)
  np.testing.assert_allclose(scores, [[1.0], [3 / 8]])


def test_a_python_rewards_nan_passes_through_and_a_wrong_type_is_named():
  """NaN from Python reaches the step as from a JAX reward (config.on_nonfinite decides);
  a value that is not a number is an error naming the task."""
  def make(value):
    return tasks.python_task("bad", lambda p, r: value, vocab_size=4, prompt_len=1,
                             max_new_tokens=2, eos_id=2, pad_id=3,
                             sample_prompts=lambda k, n: jnp.zeros((n, 1), jnp.int32))
  args = jnp.zeros((1, 1), jnp.int32), jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2))
  assert np.isnan(np.asarray(jax.jit(make(float("nan")).score)(*args))).all()
  assert np.isposinf(np.asarray(jax.jit(make(float("inf")).score)(*args))).all()
  with pytest.raises(Exception, match="task 'bad': reward_fn must return a float"):
    jax.block_until_ready(jax.jit(make("0.5").score)(*args))


def test_target_token_task_has_no_end_token():
  task = tasks.make_task("target_token", vocab_size=64, length=24, target=7)
  cfg = model.ModelConfig(vocab_size=64, max_len=32)
  params = jax.jit(model.init_params, static_argnums=0)(cfg, jax.random.PRNGKey(0))
  prompts = task.sample_prompts(jax.random.PRNGKey(1), 16)
  s = jax.jit(lambda p, k: sampler.sample(model.GPTPolicy(cfg), p, prompts, k, max_new_tokens=24,
                                          eos_id=task.eos_id, pad_id=task.pad_id))(
      params, jax.random.PRNGKey(2))
  assert float(s.mask_BxT.min()) == 1.0 and bool(s.truncated_B.all())  # never ends early
  tokens = jnp.full((1, 24), 7).at[0, :6].set(3)
  assert float(task.score(prompts[:1], tokens, jnp.ones((1, 24)))[0]) == 18 / 24
