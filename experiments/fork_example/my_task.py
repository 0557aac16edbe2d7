"""A fork's task: a Python reward registered by name (`config.task.name = "distinct"`).

The prompt is one digit d; the reward is the share of distinct digits in the response that are
not d, a plain-Python score (any checker or third-party scorer would do) that `pg` calls
through `jax.pure_callback` inside the compiled, seed-vmapped step. Its options
(`config.task.options.length`) are the factory's keyword arguments.
"""

import jax
import jax.numpy as jnp

from pg import tasks

DIGITS = tuple("0123456789")


def distinct_reward(prompt: list, response: list, length: int) -> float:
  """|{y ∈ response : y is a digit ≠ prompt}| / length."""
  return len({y for y in response if y < 10 and y != prompt[0]}) / length


@tasks.register_task("distinct")
def distinct(length: int = 6):
  """Tokens 0-9 digits, 10 end, 11 pad; prompt length 1, `length` response slots."""
  if length < 1:
    raise ValueError(f"task.length must be >= 1, got {length}.")
  return tasks.python_task(
      "distinct", lambda p, y: distinct_reward(p, y, length), vocab_size=12, prompt_len=1,
      max_new_tokens=length, eos_id=10, pad_id=11,
      sample_prompts=lambda key, n: jax.random.randint(key, (n, 1), 0, 10).astype(jnp.int32),
      token_names=DIGITS + ("<end>", "<pad>"))
