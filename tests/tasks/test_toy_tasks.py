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


def test_python_reward_works_under_jit_and_vmap():
  task = tasks.make_task("count_up")
  prompts = jnp.array([[[3]], [[9]]])
  responses = jnp.array([[[4, 5, 6, 7, 8, 9, 0, 1]], [[0, 1, 2, 10, 11, 11, 11, 11]]])
  mask = jnp.array([[[1.0] * 8], [[1.0] * 4 + [0.0] * 4]])
  scores = jax.jit(jax.vmap(task.score))(prompts, responses, mask)
  np.testing.assert_allclose(scores, [[1.0], [3 / 8]])


def test_python_reward_errors_are_clear():
  bad = tasks.python_task("bad", lambda p, r: float("nan"), vocab_size=4, prompt_len=1,
                          max_new_tokens=2, eos_id=2, pad_id=3,
                          sample_prompts=lambda k, n: jnp.zeros((n, 1), jnp.int32))
  with pytest.raises(Exception, match="finite float"):
    jax.block_until_ready(jax.jit(bad.score)(jnp.zeros((1, 1), jnp.int32),
                                             jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2))))


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
