"""Clip-Cov and KL-Cov: which tokens they select (by a loop over the batch's tokens), and the
gradient they leave on the selected and the other tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pg

B, T = 6, 8


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(2, T + 1, size=B)
  mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
  old = (-rng.exponential(size=(B, T))).astype(np.float32)
  logp = (old + 0.1 * rng.normal(size=(B, T))).astype(np.float32)
  adv = (3 * rng.normal(size=(B, T))).astype(np.float32) * mask
  return logp, old, adv, mask


def _cov_loop(logp, adv, mask):
  valid = mask > 0
  a, lp = adv[valid], logp[valid]
  return np.where(valid, (adv - a.mean()) * (logp - lp.mean()), 0.0)


def test_token_covariance_matches_a_loop():
  logp, _, adv, mask = _inputs(1)
  np.testing.assert_allclose(pg.token_covariance(logp, adv, mask), _cov_loop(logp, adv, mask),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ratio", [1e-4, 0.1, 0.3])
def test_kl_cov_penalises_the_top_k_covariance_tokens(ratio):
  logp, old, adv, mask = _inputs(2)
  coef = 0.7
  hp = pg.make_hparams(kl_cov_ratio=ratio, kl_cov_coef=coef)
  fn = pg.get_policy_loss("kl_cov")

  def total(lp):
    loss, _ = fn(pg.PolicyLossInputs(lp, jnp.asarray(old), jnp.asarray(adv), jnp.asarray(mask)),
                 hp)
    return loss.sum()
  _, metrics = fn(pg.PolicyLossInputs(jnp.asarray(logp), old, adv, mask), hp)
  grad = np.asarray(jax.grad(total)(jnp.asarray(logp)))
  cov = _cov_loop(logp, adv, mask)
  k = max(int(np.floor(ratio * mask.sum())), 1)
  top = np.zeros_like(mask, bool)
  flat = np.where(mask > 0, cov, -np.inf).ravel()
  top.ravel()[np.argsort(-flat)[:k]] = True
  rho = np.exp(logp - old)
  want = (-adv * rho + np.where(top, coef * np.sign(logp - old), 0.0)) * mask
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-5)
  assert float(metrics["clip_fraction"]) == pytest.approx(k / mask.sum())


def test_clip_cov_detaches_a_random_few_of_the_candidates():
  logp, old, adv, mask = _inputs(3)
  low, high = -1.0, 5.0
  hp = pg.make_hparams(clip_cov_ratio=0.1, clip_cov_low=low, clip_cov_high=high)
  cov = _cov_loop(logp, adv, mask)
  rho = np.exp(logp - old)
  ppo_clipped = (-adv * np.clip(rho, 0.8, 1.2)) > (-adv * rho)
  candidate = (mask > 0) & ~ppo_clipped & (cov > low) & (cov < high)
  n = min(max(int(np.floor(0.1 * mask.sum())), 1), candidate.sum())
  draws = []
  for seed in range(4):
    key = jax.random.PRNGKey(seed)
    fn = pg.get_policy_loss("clip_cov")

    def total(lp, key=key):
      loss, _ = fn(pg.PolicyLossInputs(lp, jnp.asarray(old), jnp.asarray(adv), jnp.asarray(mask),
                                       key), hp)
      return loss.sum()
    grad = np.asarray(jax.grad(total)(jnp.asarray(logp)))
    drawn = (grad == 0) & (mask > 0) & ~ppo_clipped & (adv != 0)
    assert drawn.sum() == n and np.all(candidate[drawn])
    kept = (mask > 0) & ~drawn & ~ppo_clipped
    np.testing.assert_allclose(grad[kept], (-adv * rho)[kept], rtol=1e-4, atol=1e-6)
    draws.append(drawn)
  assert any(not np.array_equal(draws[0], d) for d in draws[1:])  # the key decides the draw


def test_clip_cov_with_ratio_1_detaches_every_candidate_and_keeps_ppos_clip():
  logp, old, adv, mask = _inputs(4)
  hp = pg.make_hparams(clip_cov_ratio=1.0, clip_cov_low=-1e9, clip_cov_high=1e9)
  loss, metrics = pg.get_policy_loss("clip_cov")(pg.PolicyLossInputs(logp, old, adv, mask), hp)
  rho = np.exp(logp - old)
  ppo_clipped = ((-adv * np.clip(rho, 0.8, 1.2)) > (-adv * rho)) & (mask > 0)
  want = np.where(ppo_clipped, -adv * np.clip(rho, 0.8, 1.2), 0.0) * mask
  np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)
  assert float(metrics["clip_fraction"]) == pytest.approx(1 - ppo_clipped.sum() / mask.sum())


@pytest.mark.parametrize("field,value", [("clip_cov_ratio", 0.0), ("clip_cov_ratio", 1.5),
                                         ("kl_cov_ratio", 0.0), ("kl_cov_coef", -1.0)])
def test_bad_hyperparameters_are_refused_naming_the_field(field, value):
  with pytest.raises(ValueError, match=f"`{field}`"):
    pg.make_hparams(**{field: value})


@pytest.mark.slow  # a whole training run; default suite under 9 min, CI runs it
def test_the_train_step_hands_clip_cov_a_key_per_minibatch():
  from tiny_config import run_chunks, tiny
  c = tiny(policy_loss="clip_cov", ppo_epochs=2, num_minibatches=2)
  c.hparams.clip_cov_ratio = 0.2
  c.hparams.clip_cov_low = -100.0
  c.hparams.clip_cov_high = 100.0
  _, m, _ = run_chunks(c, 1)
  assert np.all(m["clip_fraction"] > 0) and np.all(np.isfinite(m["loss"]))
