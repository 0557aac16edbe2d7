"""DAPO's batch shaping as pure functions: the overlong penalty against its piecewise definition,
informative groups, and the fixed-size selection (informative first, whole groups)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pg.core import shaping


def test_overlong_penalty_is_dapos_piecewise_linear_ramp():
  L, buf = 20, 8
  lengths = np.arange(0, L + 1)
  got = np.asarray(shaping.overlong_penalty(jnp.asarray(lengths), L, buf))
  want = [0.0 if n <= L - buf else ((L - buf) - n) / buf for n in lengths]
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert got[-1] == -1.0 and got[L - buf] == 0.0
  with pytest.raises(ValueError, match="`buffer`"):
    shaping.overlong_penalty(jnp.asarray(lengths), L, 0)


def test_informative_groups_are_those_whose_scores_differ():
  scores = jnp.asarray([1, 1, 0, 1, 2, 2, 0.5, 0.5], jnp.float32)
  np.testing.assert_array_equal(shaping.informative_groups(scores, 2), [0, 1, 0, 0])


@pytest.mark.parametrize("seed", range(3))
def test_selection_takes_informative_groups_first_and_keeps_groups_whole(seed):
  G = 3
  rng = np.random.default_rng(seed)
  informative = rng.random(8) < 0.5
  scores = np.where(informative[:, None], rng.normal(size=(8, G)), 1.0).reshape(-1)
  chosen, kept = shaping.select_groups(jnp.asarray(scores, jnp.float32), G, 4,
                                       jax.random.PRNGKey(seed))
  chosen, kept = np.asarray(chosen), np.asarray(kept)
  assert len(set(chosen.tolist())) == 4
  n_inf = int(informative.sum())
  assert kept.sum() == min(4, n_inf) and np.all(informative[chosen] == (kept > 0))
  assert np.all(kept[:min(4, n_inf)] == 1)  # informative ones first
  rows = np.asarray(shaping.gather_groups(jnp.arange(8 * G), jnp.asarray(chosen), G))
  np.testing.assert_array_equal(rows.reshape(4, G) // G, np.repeat(chosen[:, None], G, 1))
