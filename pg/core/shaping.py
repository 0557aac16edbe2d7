"""Batch shaping with fixed shapes: DAPO's dynamic sampling and overlong reward shaping (Yu et
al., 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale").

    dynamic sampling   of M ≥ N sampled groups (prompts × G samples), keep N whose scores are
                       not all equal (a group of equal scores has zero group-relative advantage
                       and only dilutes the batch). Under `jit` the selection is a fixed-size
                       gather: informative groups first, in a random order; when fewer than N
                       qualify the rest are filled with uninformative groups and masked out.
    overlong shaping   R_length(|y|) = 0                            if |y| ≤ L − L_buf
                                     = ((L − L_buf) − |y|) / L_buf  if L − L_buf < |y| ≤ L
                       (−1 at the limit L = max_new_tokens), added to the score with a factor.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pg.core import _checks


def overlong_penalty(lengths_B, max_len: int, buffer: int):
  """DAPO's soft length penalty in [−1, 0], `[B]`. `lengths_B`: generated tokens per row
  (end token included); `max_len` (L) and `buffer` (L_buf, 0 < L_buf ≤ L) static ints."""
  fn = "overlong_penalty"
  _checks.rank(fn, "lengths_B", lengths_B, 1)
  if not 0 < buffer <= max_len:
    raise ValueError(f"{fn}: `buffer` must lie in (0, max_len = {max_len}], got {buffer}.")
  n = jnp.asarray(lengths_B, jnp.float32)
  start = max_len - buffer
  return jnp.where(n <= start, 0.0, jnp.maximum((start - n) / buffer, -1.0))


def informative_groups(scores_B, group_size: int):
  """1.0 for each group whose G scores are not all equal, `[B / G]`."""
  fn = "informative_groups"
  _checks.rank(fn, "scores_B", scores_B, 1)
  _checks.group_size(fn, scores_B.shape[0], group_size)
  r_MxG = jnp.asarray(scores_B, jnp.float32).reshape(-1, group_size)
  return (jnp.max(r_MxG, axis=1) > jnp.min(r_MxG, axis=1)).astype(jnp.float32)


def select_groups(scores_B, group_size: int, num_keep: int, key):
  """(group indices `[num_keep]`, kept_N): informative groups first in a random order (`key`),
  then the others; kept_N is 1.0 where the selected group is informative. Static sizes."""
  informative_M = informative_groups(scores_B, group_size)
  M = informative_M.shape[0]
  if not 0 < num_keep <= M:
    raise ValueError(f"select_groups: `num_keep` must lie in (0, {M}] groups, got {num_keep}.")
  priority_M = jax.random.uniform(key, (M,)) - 2.0 * informative_M  # informative: below −1
  order_M = jnp.argsort(priority_M)
  chosen_N = order_M[:num_keep]
  return chosen_N, informative_M[chosen_N]


def gather_groups(x, chosen_N, group_size: int):
  """Rows of the chosen groups of `x` (`[M·G, ...]` → `[N·G, ...]`), groups kept whole."""
  rows = (chosen_N[:, None] * group_size + jnp.arange(group_size)[None]).reshape(-1)
  return x[rows]
