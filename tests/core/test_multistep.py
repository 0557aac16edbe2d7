"""GAE, returns and whitening against plain Python loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pg

B, T = 7, 13


def random_inputs(seed, gaps=True):
  rng = np.random.default_rng(seed)
  rewards_BxT = rng.normal(size=(B, T)).astype(np.float32)
  values_BxT = rng.normal(size=(B, T)).astype(np.float32)
  lengths_B = rng.integers(0, T + 1, size=B)
  mask_BxT = (np.arange(T)[None] < lengths_B[:, None]).astype(np.float32)
  if gaps:  # holes inside responses (e.g. tool output), skipped by the recursion
    mask_BxT = mask_BxT * (rng.random((B, T)) < 0.75)
  return rewards_BxT, values_BxT, mask_BxT


def gae_loop(r, v, m, gamma, lam):
  """The definition, one row and one token at a time, stepping over masked positions."""
  adv = np.zeros_like(r)
  for b in range(r.shape[0]):
    next_v, a = 0.0, 0.0
    for t in reversed(range(r.shape[1])):
      if m[b, t]:
        delta = r[b, t] + gamma * next_v - v[b, t]
        a = delta + gamma * lam * a
        next_v = v[b, t]
        adv[b, t] = a
  return adv


def returns_loop(r, m, gamma):
  g_out = np.zeros_like(r)
  for b in range(r.shape[0]):
    g = 0.0
    for t in reversed(range(r.shape[1])):
      if m[b, t]:
        g = r[b, t] + gamma * g
        g_out[b, t] = g
  return g_out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.99, 0.95), (0.9, 0.0), (0.5, 0.3)])
@pytest.mark.parametrize("gaps", [False, True])
def test_gae_matches_loop(seed, gamma, lam, gaps):
  r, v, m = random_inputs(seed, gaps)
  expected = gae_loop(r, v, m, gamma, lam)
  scan = jax.jit(pg.generalized_advantage_estimation)(r, v, m, gamma, lam)
  assoc = jax.jit(pg.generalized_advantage_estimation_associative)(r, v, m, gamma, lam)
  np.testing.assert_allclose(scan, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(assoc, scan, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_discounted_returns_match_loop(seed, gamma):
  r, _, m = random_inputs(seed)
  np.testing.assert_allclose(pg.discounted_returns(r, m, gamma), returns_loop(r, m, gamma),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gaps", [False, True])
def test_lambda_one_is_monte_carlo_minus_value(gaps):
  r, v, m = random_inputs(5, gaps)
  adv = pg.generalized_advantage_estimation(r, v, m, 0.97, 1.0)
  np.testing.assert_allclose(adv, (returns_loop(r, m, 0.97) - v) * m, rtol=1e-5, atol=1e-5)


def test_lambda_zero_is_td_error():
  r, v, m = random_inputs(6, gaps=False)  # contiguous responses: next value is V_{t+1}
  gamma = 0.9
  next_v = np.concatenate([v[:, 1:] * m[:, 1:], np.zeros((B, 1), np.float32)], axis=1)
  td = (r + gamma * next_v - v) * m
  np.testing.assert_allclose(pg.generalized_advantage_estimation(r, v, m, gamma, 0.0), td,
                             rtol=1e-5, atol=1e-5)


def test_lambda_returns_match_recursive_definition():
  # G^λ_t = r_t + γ[(1 − λ)V_{t+1} + λ G^λ_{t+1}], with V = G^λ = 0 past the end.
  r, v, m = random_inputs(7, gaps=False)
  gamma, lam = 0.95, 0.7
  expected = np.zeros_like(r)
  for b in range(B):
    g_next, v_next = 0.0, 0.0
    for t in reversed(range(T)):
      if m[b, t]:
        g_next = r[b, t] + gamma * ((1 - lam) * v_next + lam * g_next)
        v_next = v[b, t]
        expected[b, t] = g_next
  np.testing.assert_allclose(pg.lambda_returns(r, v, m, gamma, lam), expected,
                             rtol=1e-5, atol=1e-5)


def test_outputs_are_zero_on_masked_positions():
  r, v, m = random_inputs(8)
  for out in (pg.generalized_advantage_estimation(r, v, m, 0.9, 0.9),
              pg.generalized_advantage_estimation_associative(r, v, m, 0.9, 0.9),
              pg.discounted_returns(r, m, 0.9), pg.lambda_returns(r, v, m, 0.9, 0.9)):
    assert np.all(np.asarray(out)[m == 0] == 0)


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_associative_matches_scan_on_long_sequences():
  rng = np.random.default_rng(0)
  r = rng.normal(size=(3, 1024)).astype(np.float32)
  v = rng.normal(size=(3, 1024)).astype(np.float32)
  m = (rng.random((3, 1024)) < 0.9).astype(np.float32)
  np.testing.assert_allclose(pg.generalized_advantage_estimation_associative(r, v, m, 0.999, 0.95),
                             pg.generalized_advantage_estimation(r, v, m, 0.999, 0.95),
                             rtol=1e-4, atol=1e-4)


def test_masked_whiten_uses_only_unmasked_tokens():
  r, _, m = random_inputs(9)
  w = np.asarray(pg.masked_whiten(r, m, eps=0.0))
  sel = w[m > 0]
  np.testing.assert_allclose(sel.mean(), 0.0, atol=1e-5)
  np.testing.assert_allclose(sel.std(ddof=1), 1.0, rtol=1e-4)
  assert np.all(w[m == 0] == 0)
  # Padding values must not leak in: change them and nothing moves.
  r2 = np.where(m > 0, r, 1e6).astype(np.float32)
  np.testing.assert_allclose(pg.masked_whiten(r2, m, eps=0.0), w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mask", [[[0.0, 1.0, 0.0]], [[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]]],
                         ids=["one-token", "no-token", "tied"])
def test_masked_whiten_with_eps_zero_never_gives_nan(mask):
  """ε = 0 and a variance of 0 (fewer than 2 tokens, or tied values): nothing to rescale, the
  centred values are 0, and so is the gradient, not NaN."""
  x = jnp.array([[2.0, 2.0, 2.0]])
  m = jnp.asarray(mask)
  np.testing.assert_array_equal(pg.masked_whiten(x, m, eps=0.0), jnp.zeros((1, 3)))
  np.testing.assert_array_equal(pg.masked_whiten(x, m, eps=0.0, shift_mean=False), x * m)
  grad = jax.grad(lambda x: jnp.sum(pg.masked_whiten(x, m, eps=0.0) * jnp.arange(3.0)))(x)
  assert np.all(np.isfinite(grad))


def test_masked_whiten_without_shift_keeps_signs():
  r, _, m = random_inputs(10)
  w = np.asarray(pg.masked_whiten(r, m, shift_mean=False))
  assert np.all(np.sign(w[m > 0]) == np.sign(r[m > 0]))
