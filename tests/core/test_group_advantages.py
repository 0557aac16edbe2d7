"""REINFORCE++-baseline, OPO, GRPO pass@k, MaxRL, ReMax and GDPO, each against a plain Python
loop over groups and tokens (the references' formulas), plus the facts their registrations
carry and the train step's use of them (a greedy baseline, a task's reward components)."""

import numpy as np
import pytest
import jax.numpy as jnp

import pg
from tiny_config import run_chunks, tiny

G, P, T = 4, 3, 5
B = G * P


def _data(seed=0, binary=False):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, T + 1, size=B)
  mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
  scores = (rng.integers(0, 2, size=B) if binary else rng.normal(size=B)).astype(np.float32)
  kl = (0.2 * rng.normal(size=(B, T))).astype(np.float32)
  return scores, mask, kl


def _run(name, scores, mask, kl=None, hp=None, **extra):
  hp = pg.make_hparams(**(hp or {}))
  inputs = pg.AdvantageInputs(jnp.asarray(scores), jnp.asarray(mask),
                              kl_BxT=None if kl is None else jnp.asarray(kl), group_size=G,
                              **extra)
  out = pg.get_advantage(name)(inputs, hp, pg.init_baseline_state())
  return np.asarray(out.advantages_BxT), np.asarray(out.returns_BxT)


def _kl_to_go(kl, mask, beta):
  """−β Σ_{s ≥ t} kl_s m_s, a loop."""
  out = np.zeros_like(mask)
  for b in range(B):
    acc = 0.0
    for t in reversed(range(T)):
      acc += -beta * kl[b, t] * mask[b, t]
      out[b, t] = acc * mask[b, t]
  return out


def _whiten(x, mask, eps=1e-6):
  vals = x[mask > 0]
  mean, var = vals.mean(), vals.var(ddof=1)
  return (x - mean) / np.sqrt(var + eps) * mask


def _last(mask):
  out = np.zeros_like(mask)
  for b in range(B):
    idx = np.nonzero(mask[b])[0]
    out[b, idx[-1]] = 1.0
  return out


def test_registrations_carry_their_facts():
  for name in ("reinforce_pp_baseline", "opo", "grpo_passk", "maxrl", "gdpo"):
    assert pg.get_advantage(name).min_group_size == 2
  assert pg.get_advantage("reinforce_pp_baseline").handles_kl
  assert pg.get_advantage("gdpo").handles_kl and pg.get_advantage("gdpo").needs_components
  assert pg.get_advantage("remax").needs_greedy
  assert not pg.get_advantage("opo").handles_kl  # the registry adds the KL


@pytest.mark.parametrize("seed", range(3))
def test_opo_is_the_length_weighted_group_baseline(seed):
  scores, mask, kl = _data(seed)
  adv, _ = _run("opo", scores, mask, kl, {"kl_coef": 0.1})
  want = np.zeros(B)
  for g in range(P):
    rows = slice(g * G, (g + 1) * G)
    n = mask[rows].sum(1)
    want[rows] = scores[rows] - (n * scores[rows]).sum() / n.sum()
  np.testing.assert_allclose(adv, want[:, None] * mask + _kl_to_go(kl, mask, 0.1), atol=1e-5)


def test_grpo_passk_pushes_only_each_groups_best_sample():
  scores = np.asarray([1, 0, 3, 2, 5, 5, 1, 0, 0, 0, 0, 0], np.float32)  # a tie, all equal
  _, mask, _ = _data(0)
  adv, _ = _run("grpo_passk", scores, mask, hp={"adv_eps": 1e-6})
  want = np.zeros(B)
  for g in range(P):
    r = scores[g * G:(g + 1) * G]
    top = np.sort(r)[::-1]
    want[g * G + int(np.argmax(r))] = (top[0] - top[1]) / (np.std(r, ddof=1) + 1e-6)
  np.testing.assert_allclose(adv, want[:, None] * mask, rtol=1e-5, atol=1e-6)
  assert np.count_nonzero(adv.sum(1)) == 1  # group 2 is a tie (margin 0), group 3 all equal


@pytest.mark.parametrize("seed", range(3))
def test_maxrl_divides_the_centred_reward_by_the_group_mean(seed):
  scores, mask, _ = _data(seed, binary=True)
  scores[:G] = 0.0  # a group without a success: no signal, not a division by zero
  adv, _ = _run("maxrl", scores, mask)
  for g in range(P):
    r = scores[g * G:(g + 1) * G]
    mu = r.mean()
    want = (r - mu) / (mu + 1e-6) if mu > 1e-6 else np.zeros(G)
    np.testing.assert_allclose(adv[g * G:(g + 1) * G], want[:, None] * mask[g * G:(g + 1) * G],
                               rtol=1e-5, atol=1e-6)


def test_maxrl_on_binary_rewards_is_the_mean_over_successes_minus_the_mean_over_all():
  """Σ_i A_i ∇log π_i / G = (1/K) Σ_{successes} ∇log π − (1/G) Σ_all ∇log π (MaxRL, eq. 8)."""
  r = np.asarray([1, 0, 1, 0], np.float32)
  adv = np.asarray(pg.maxrl_advantages(jnp.asarray(r), 4, 0.0))
  k = r.sum()
  np.testing.assert_allclose(adv / 4, r / k - 1 / 4, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_reinforce_pp_baseline_centres_then_whitens_over_the_batch(seed):
  scores, mask, kl = _data(seed)
  beta, gamma = 0.05, 0.9
  adv, returns = _run("reinforce_pp_baseline", scores, mask, kl,
                      {"kl_coef": beta, "gamma": gamma})
  centred = scores - np.repeat(scores.reshape(P, G).mean(1), G)
  r = centred[:, None] * _last(mask) - beta * kl * mask
  g = np.zeros_like(r)
  for b in range(B):
    acc = 0.0
    for t in reversed(range(T)):
      acc = r[b, t] + gamma * acc * mask[b, t]
      g[b, t] = acc * mask[b, t]
  np.testing.assert_allclose(adv, _whiten(g, mask), rtol=1e-4, atol=1e-5)
  assert abs(adv[mask > 0].mean()) < 1e-5


@pytest.mark.parametrize("seed", range(3))
def test_remax_subtracts_the_greedy_responses_score(seed):
  scores, mask, kl = _data(seed)
  greedy = np.random.default_rng(seed + 9).normal(size=B).astype(np.float32)
  adv, _ = _run("remax", scores, mask, kl, {"kl_coef": 0.2},
                baseline_scores_B=jnp.asarray(greedy))
  np.testing.assert_allclose(adv, (scores - greedy)[:, None] * mask + _kl_to_go(kl, mask, 0.2),
                             atol=1e-5)
  with pytest.raises(ValueError, match="`baseline_scores_B`"):
    _run("remax", scores, mask)


def test_gdpo_normalises_each_component_in_its_group_before_summing():
  rng = np.random.default_rng(3)
  _, mask, kl = _data(3)
  correct = rng.integers(0, 2, size=B).astype(np.float32)
  fmt = (0.01 * rng.integers(0, 2, size=B)).astype(np.float32)  # a tiny-variance component
  weights = np.asarray([1.0, 0.5], np.float32)
  scores = weights @ np.stack([correct, fmt])
  adv, _ = _run("gdpo", scores, mask, kl, {"kl_coef": 0.1},
                components_KxB=jnp.asarray(np.stack([correct, fmt])),
                component_weights_K=jnp.asarray(weights))
  summed = np.zeros(B)
  for w, comp in zip(weights, (correct, fmt)):
    for g in range(P):
      r = comp[g * G:(g + 1) * G]
      summed[g * G:(g + 1) * G] += w * (r - r.mean()) / (np.std(r, ddof=1) + 1e-6)
  want = _whiten(summed[:, None] * mask + _kl_to_go(kl, mask, 0.1), mask)
  np.testing.assert_allclose(adv, want, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="`components_KxB`"):
    _run("gdpo", scores, mask)


def test_component_shapes_are_checked_by_name():
  scores, mask, _ = _data(0)
  with pytest.raises(ValueError, match="`components_KxB`"):
    _run("gdpo", scores, mask, components_KxB=jnp.zeros((2, B + 1)),
         component_weights_K=jnp.ones(2))
  with pytest.raises(ValueError, match="`component_weights_K`"):
    _run("gdpo", scores, mask, components_KxB=jnp.zeros((2, B)),
         component_weights_K=jnp.ones(3))


@pytest.mark.slow  # a whole training run; default suite under 9 min, CI runs it
def test_remax_trains_with_a_greedy_baseline_drawn_in_the_step():
  c = tiny(advantage="remax", group_size=2)
  _, m, _ = run_chunks(c, 1)
  assert np.all(np.isfinite(m["mean_score"]))
  assert np.any(m["advantage_std"] > 0)


def test_gdpo_needs_a_task_with_components():
  c = tiny(advantage="gdpo")
  with pytest.raises(ValueError, match="task 'needle' has none"):
    from pg import train
    train.build(c)
