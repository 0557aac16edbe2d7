"""Rollout-correction weights against their definitions, and the bias claim by exact
enumeration: on every sequence of a two-token, two-symbol space drawn from a sampler q ≠ p,
sequence-level IS recovers the trainer's exact policy gradient; token-level IS does not."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pg.core import rollout_correction as rc

B, T = 5, 6


def _inputs(seed=0, scale=0.4):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, T + 1, size=B)
  mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
  sampler = (-rng.exponential(size=(B, T))).astype(np.float32)
  train = (sampler + scale * rng.normal(size=(B, T))).astype(np.float32)
  return train, sampler, mask


def test_token_and_sequence_tis_truncate_the_ratios():
  train, sampler, mask = _inputs(1)
  rho = np.exp(train - sampler)
  w, rej = rc.token_tis(train, sampler, mask, cap=1.5)
  np.testing.assert_allclose(w, np.minimum(rho, 1.5) * mask, rtol=1e-5)
  np.testing.assert_array_equal(rej, (rho > 1.5) * mask)
  seq = np.exp(((train - sampler) * mask).sum(1))
  w, rej = rc.sequence_tis(train, sampler, mask, cap=1.5)
  np.testing.assert_allclose(w, np.minimum(seq, 1.5)[:, None] * mask, rtol=1e-5)
  np.testing.assert_array_equal(rej, (seq > 1.5)[:, None] * mask)


def test_masked_is_zeroes_whatever_leaves_the_band():
  train, sampler, mask = _inputs(2)
  rho = np.exp(train - sampler)
  inside = (rho >= 0.8) & (rho <= 1.25)
  w, rej = rc.token_mis(train, sampler, mask, lo=0.8, hi=1.25)
  np.testing.assert_allclose(w, np.where(inside, rho, 0) * mask, rtol=1e-5)
  np.testing.assert_array_equal(rej, ~inside * mask)
  seq = np.exp(((train - sampler) * mask).sum(1))
  keep = (seq >= 0.8) & (seq <= 1.25)
  w, _ = rc.sequence_mis(train, sampler, mask, lo=0.8, hi=1.25)
  np.testing.assert_allclose(w, np.where(keep, seq, 0)[:, None] * mask, rtol=1e-5)


def test_geometric_rejection_uses_the_per_token_geometric_mean():
  train, sampler, mask = _inputs(3)
  geo = np.exp(((train - sampler) * mask).sum(1) / mask.sum(1))
  keep = (geo >= 0.9) & (geo <= 1.1)
  w, rej = rc.geometric_rejection(train, sampler, mask, lo=0.9, hi=1.1)
  np.testing.assert_array_equal(w, keep[:, None] * mask)
  np.testing.assert_array_equal(rej, ~keep[:, None] * mask)
  assert 0 < keep.sum() < B  # both branches taken by these inputs


def test_off_policy_sequence_mask_drops_only_negative_advantages_that_moved():
  train, sampler, mask = _inputs(4)
  adv = np.asarray([1, -1, -1, 1, -1], np.float32)[:, None] * mask
  kl = ((sampler - train) * mask).sum(1) / mask.sum(1)
  w, rej = rc.off_policy_sequence_mask(train, sampler, adv, mask, delta=0.01)
  drop = (adv.sum(1) < 0) & (kl > 0.01)
  np.testing.assert_array_equal(rej, drop[:, None] * mask)
  np.testing.assert_array_equal(w, ~drop[:, None] * mask)


def test_diagnostics():
  mask = np.ones((2, 3), np.float32)
  assert float(rc.effective_sample_size(np.ones((2, 3)), mask)) == pytest.approx(1.0)
  one = np.zeros((2, 3)); one[0, 0] = 5.0
  assert float(rc.effective_sample_size(one, mask)) == pytest.approx(1 / 6)
  train, sampler, m = _inputs(5)
  w, rej = rc.token_tis(train, sampler, m, cap=1.2)
  d = rc.diagnostics(w, rej, train, sampler, m)
  r = np.exp(train - sampler)
  k3 = ((r - 1) - np.log(r)) * m
  assert float(d["mismatch_k3"]) == pytest.approx(k3.sum() / m.sum(), rel=1e-4)
  assert float(d["is_rejected_fraction"]) == pytest.approx((r > 1.2)[m > 0].mean())
  delta = np.abs(train - sampler)
  assert float(d["mismatch_abs_logp"]) == pytest.approx((delta * m).sum() / m.sum(), rel=1e-5)
  outside = (r < 0.5) | (r > 2.0)
  assert outside[m > 0].any() and not outside[m > 0].all()
  assert float(d["mismatch_ratio_outside"]) == pytest.approx(outside[m > 0].mean())
  assert 0 < float(d["is_ess"]) <= 1


def test_unknown_mode_and_bad_band_are_refused():
  train, sampler, mask = _inputs(0)
  with pytest.raises(ValueError, match="unknown `mode`"):
    rc.correction_weights("tis", train, sampler, mask)
  with pytest.raises(ValueError, match="`hi`"):
    rc.token_mis(train, sampler, mask, lo=0.5, hi=0.0)
  with pytest.raises(ValueError, match="`sampler_logp_BxT`"):
    rc.token_tis(train, sampler[:, :2], mask)


# Exact enumeration -----------------------------------------------------------------------------

V, L = 2, 2
SEQS = np.asarray(list(itertools.product(range(V), repeat=L)), np.int32)  # all V^L responses
REWARD = np.asarray([1.0, -0.5, 2.0, 0.3], np.float32)


def _logp(theta, seqs):
  """A tabular autoregressive policy: logits θ[t, y_{t−1}] (y_{−1} = 0), log π(y_t | y_<t)."""
  prev = np.concatenate([np.zeros((len(seqs), 1), np.int32), seqs[:, :-1]], axis=1)
  logits = theta[jnp.arange(L)[None], prev]                         # [S, L, V]
  return jnp.take_along_axis(jax.nn.log_softmax(logits), seqs[..., None], axis=-1)[..., 0]


def _gradient(theta, q_theta, mode):
  """Σ_y q(y)·Σ_t w_t·R(y)·∇log p(y_t | y_<t) with the weights of `mode` (no truncation)."""
  mask = np.ones(SEQS.shape, np.float32)
  q_logp = _logp(q_theta, SEQS)
  q_seq = jnp.exp(q_logp.sum(1))

  def surrogate(th):
    p_logp = _logp(th, SEQS)
    w, _ = rc.correction_weights(mode, p_logp, q_logp, mask, cap=1e6, lo=0.0, hi=1e6)
    return jnp.sum(q_seq[:, None] * w * REWARD[:, None] * p_logp)
  return jax.grad(surrogate)(theta)


def test_sequence_is_recovers_the_exact_gradient_and_token_is_does_not():
  rng = np.random.default_rng(0)
  theta = jnp.asarray(rng.normal(size=(L, V, V)), jnp.float32)
  q_theta = theta + jnp.asarray(0.8 * rng.normal(size=(L, V, V)), jnp.float32)
  # The trainer's exact gradient ∇ Σ_y p(y) R(y), by autodiff through the enumeration.
  exact = jax.grad(lambda th: jnp.sum(jnp.exp(_logp(th, SEQS).sum(1)) * REWARD))(theta)
  np.testing.assert_allclose(_gradient(theta, q_theta, "sequence_tis"), exact, rtol=1e-4,
                             atol=1e-6)
  biased = _gradient(theta, q_theta, "token_tis")
  assert np.max(np.abs(np.asarray(biased) - np.asarray(exact))) > 1e-2
  # Without a mismatch every correction is the identity: both are exact.
  np.testing.assert_allclose(_gradient(theta, theta, "token_tis"), exact, rtol=1e-4, atol=1e-6)
