"""The API contract of every public function of `pg`.

For each function exported by `pg/__init__.py` (and every registered advantage estimator and
policy loss, reached through the registry):

1. it runs under `jax.jit` (same result as eager) and under `jax.vmap`, both over a leading seed
   axis of all array inputs and over a swept scalar hyperparameter, and the vmapped result equals
   a Python loop of unbatched calls;
2. a second call of the jitted function with new values of the same shapes (new arrays and new
   hyperparameter values, passed as traced leaves of a dict) does not retrace or recompile;
3. bad input raises a clear error naming the argument, at trace time (before anything compiles);
   the registries check signatures, refuse duplicates and list the known names.

Shapes are tiny (B=4, T=6, V=11) to keep the whole file fast on a CPU.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pg

from compile_guard import no_compiles

B, T, V, G = 4, 6, 11, 2  # batch, response length, vocabulary, group size (B = 2 prompts × G)
CHUNK = 4  # V = 11 = 2 full chunks of 4 (under `lax.scan`) + a remainder of 3
N_SEEDS = 3
RTOL, ATOL = 1e-5, 1e-6


# ---------------------------------------------------------------------------------------------
# Inputs: numpy arrays, a fresh draw per seed, identical shapes for every seed.

def _rng(seed):
  return np.random.default_rng(1000 + seed)


def _f32(rng, *shape, scale=1.0):
  return (scale * rng.normal(size=shape)).astype(np.float32)


def _mask_BxT(rng):
  """Prefix masks of random lengths in [1, T]; row 0 has a gap (e.g. tool output) inside."""
  lengths_B = rng.integers(1, T + 1, size=B)
  lengths_B[0] = T
  mask_BxT = (np.arange(T)[None, :] < lengths_B[:, None]).astype(np.float32)
  mask_BxT[0, 2] = 0.0
  return mask_BxT


def _logp_BxT(rng):
  return (-rng.exponential(size=(B, T))).astype(np.float32)


def _tokens_BxT(rng):
  return rng.integers(0, V, size=(B, T)).astype(np.int32)


def _scores_B(rng):
  scores_B = rng.normal(size=B).astype(np.float32)
  scores_B[1] = scores_B[0]  # a group whose scores tie: GRPO's std is 0 there
  return scores_B


def _state(rng):
  weight = rng.uniform(0.0, 1.0)
  return {"ema_value": np.float32(rng.normal() * weight), "ema_weight": np.float32(weight)}


# ---------------------------------------------------------------------------------------------
# Cases: `fn(*args, **hp)` with every array in `args` and every swept scalar in `hp` (traced).

@dataclasses.dataclass(frozen=True)
class Case:
  id: str
  fn: Callable
  make_args: Callable  # seed -> tuple of array pytrees
  hparams: dict = dataclasses.field(default_factory=dict)  # name -> 3 values; [0] = default
  sweep: tuple = ()  # names in `hparams` to sweep under vmap
  use_make_hparams: bool = False  # hp dict built by `pg.make_hparams` (registry cases)

  def hp(self, i):
    """The hyperparameter dict with every value at index i (float32 scalars)."""
    if self.use_make_hparams:
      return pg.make_hparams(**{k: v[i] for k, v in self.hparams.items()})
    return {k: jnp.float32(v[i]) for k, v in self.hparams.items()}

  def hp_sweep(self, name):
    """Defaults everywhere, `name` a float32 vector of its 3 values (the vmap axis)."""
    if self.use_make_hparams:
      return pg.make_hparams(**{k: (v if k == name else v[0]) for k, v in self.hparams.items()})
    return {**self.hp(0), name: jnp.asarray(self.hparams[name], jnp.float32)}

  def __str__(self):
    return self.id


def _case(id, fn, make_args, sweep=None, **hparams):
  return Case(id, fn, make_args, hparams, tuple(hparams) if sweep is None else sweep)


TEMPERATURE = (1.0, 0.5, 2.0)
GAMMA = (0.9, 1.0, 0.0)
LAM = (0.95, 0.0, 1.0)


def _logprob_cases():
  cases = []
  for label, chunk in (("dense", None), ("chunked", CHUNK)):
    def logits_tokens(seed):
      rng = _rng(seed)
      return _f32(rng, B, T, V, scale=3.0), _tokens_BxT(rng)

    def logits_only(seed):
      return (_f32(_rng(seed), B, T, V, scale=3.0),)

    def grad_args(seed):
      rng = _rng(seed)
      return (_f32(rng, B, T, V, scale=3.0), _tokens_BxT(rng), _f32(rng, B, T), _f32(rng, B, T))

    def head_args(seed):
      rng = _rng(seed)
      return (_f32(rng, B, T, 8), _f32(rng, 8, V), _f32(rng, V), _tokens_BxT(rng))

    def head_grads(h_BxTxD, kernel_DxV, bias_V, tokens_BxT, temperature, chunk=chunk):
      def objective(h, kernel, bias):
        logp_BxT, ent_BxT = pg.head_log_probs_and_entropy(
            h, kernel, bias, tokens_BxT, temperature=temperature, chunk_size=chunk)
        return jnp.sum(logp_BxT) + 0.5 * jnp.sum(ent_BxT)
      return jax.grad(objective, argnums=(0, 1, 2))(h_BxTxD, kernel_DxV, bias_V)

    def grads(logits_BxTxV, tokens_BxT, w_logp_BxT, w_ent_BxT, temperature, chunk=chunk):
      def objective(x_BxTxV, tau):
        logp_BxT, ent_BxT = pg.token_log_probs_and_entropy(
            x_BxTxV, tokens_BxT, temperature=tau, chunk_size=chunk)
        return jnp.sum(w_logp_BxT * logp_BxT + w_ent_BxT * ent_BxT)
      return jax.grad(objective, argnums=(0, 1))(logits_BxTxV, temperature)

    cases += [
        _case(f"token_log_probs[{label}]",
              lambda x, y, temperature, chunk=chunk: pg.token_log_probs(
                  x, y, temperature=temperature, chunk_size=chunk),
              logits_tokens, temperature=TEMPERATURE),
        _case(f"token_log_probs_and_entropy[{label}]",
              lambda x, y, temperature, chunk=chunk: pg.token_log_probs_and_entropy(
                  x, y, temperature=temperature, chunk_size=chunk),
              logits_tokens, temperature=TEMPERATURE),
        _case(f"token_entropy[{label}]",
              lambda x, temperature, chunk=chunk: pg.token_entropy(
                  x, temperature=temperature, chunk_size=chunk),
              logits_only, temperature=TEMPERATURE),
        _case(f"grad_token_log_probs_and_entropy[{label}]", grads, grad_args,
              temperature=TEMPERATURE),
        _case(f"head_log_probs_and_entropy[{label}]",
              lambda h, k, b, y, temperature, chunk=chunk: pg.head_log_probs_and_entropy(
                  h, k, b, y, temperature=temperature, chunk_size=chunk),
              head_args, temperature=TEMPERATURE),
        _case(f"grad_head_log_probs_and_entropy[{label}]", head_grads, head_args,
              temperature=TEMPERATURE),
    ]
  cases.append(_case("sequence_log_probs", pg.sequence_log_probs,
                     lambda s: (_logp_BxT(_rng(s)), _mask_BxT(_rng(s)))))
  return cases


def _x_mask(seed):
  rng = _rng(seed)
  return _f32(rng, B, T, scale=2.0), _mask_BxT(rng)


def _masked_cases():
  return [
      _case("masked_sum[all]", pg.masked_sum, _x_mask),
      _case("masked_sum[axis=1]", lambda x, m: pg.masked_sum(x, m, axis=1), _x_mask),
      _case("masked_mean[all]", pg.masked_mean, _x_mask),
      _case("masked_mean[axis=1]", lambda x, m: pg.masked_mean(x, m, axis=1), _x_mask),
      _case("masked_var[unbiased]", pg.masked_var, _x_mask),
      _case("masked_var[biased]", lambda x, m: pg.masked_var(x, m, unbiased=False), _x_mask),
      _case("masked_whiten", lambda x, m, eps: pg.masked_whiten(x, m, eps=eps), _x_mask,
            eps=(1e-8, 1e-3, 0.5)),
      _case("masked_whiten[no_shift]",
            lambda x, m, eps: pg.masked_whiten(x, m, eps=eps, shift_mean=False), _x_mask,
            eps=(1e-8, 1e-3, 0.5)),
      _case("last_token_mask", pg.last_token_mask, lambda s: (_mask_BxT(_rng(s)),)),
  ]


def _logp_ref(seed):
  rng = _rng(seed)
  logp_BxT = _logp_BxT(rng)
  ref_BxT = logp_BxT + _f32(rng, B, T, scale=3.0)
  ref_BxT[0, 0] = logp_BxT[0, 0] - 30.0  # beyond the ±20 clamp
  return logp_BxT, ref_BxT


def _kl_cases():
  cases = [
      _case("log_ratio", lambda a, b, clamp: pg.log_ratio(a, b, clamp), _logp_ref,
            clamp=(20.0, 0.5, 2.0)),
      _case("kl_k1", pg.kl_k1, _logp_ref),
      _case("kl_k2", pg.kl_k2, _logp_ref),
      _case("kl_k3", pg.kl_k3, _logp_ref),
  ]
  for kind in ("k1", "k2", "k3"):
    cases.append(_case(f"kl_estimate[{kind}]",
                       lambda a, b, kind=kind: pg.kl_estimate(a, b, kind), _logp_ref))
  return cases


def _rewards_args(seed):
  rng = _rng(seed)
  return _scores_B(rng), _mask_BxT(rng), _f32(rng, B, T)


def _rvm(seed):
  rng = _rng(seed)
  return _f32(rng, B, T), _f32(rng, B, T), _mask_BxT(rng)


def _multistep_cases():
  return [
      _case("per_token_rewards",
            lambda s, m, kl, kl_coef: pg.per_token_rewards(s, m, kl, kl_coef),
            _rewards_args, kl_coef=(0.1, 0.0, 1.0)),
      _case("per_token_rewards[no_kl]", lambda s, m, kl: pg.per_token_rewards(s, m),
            _rewards_args),
      _case("discounted_returns",
            lambda r, v, m, gamma: pg.discounted_returns(r, m, gamma), _rvm, gamma=GAMMA),
      _case("generalized_advantage_estimation", pg.generalized_advantage_estimation, _rvm,
            gamma=GAMMA, lam=LAM),
      _case("generalized_advantage_estimation_associative",
            pg.generalized_advantage_estimation_associative, _rvm, gamma=GAMMA, lam=LAM),
      _case("lambda_returns", pg.lambda_returns, _rvm, gamma=GAMMA, lam=LAM),
  ]


def _scores_only(seed):
  return (_scores_B(_rng(seed)),)


def _state_scores(seed):
  rng = _rng(seed)
  return _state(rng), _scores_B(rng)


DECAY = (0.9, 0.0, 0.5)


def _baseline_cases():
  return [
      _case("group_mean_advantages", lambda s: pg.group_mean_advantages(s, G), _scores_only),
      _case("rloo_advantages", lambda s: pg.rloo_advantages(s, G), _scores_only),
      _case("grpo_advantages[bessel]", lambda s, eps: pg.grpo_advantages(s, G, eps),
            _scores_only, eps=(1e-6, 1e-3, 0.5)),
      _case("grpo_advantages[population]",
            lambda s, eps: pg.grpo_advantages(s, G, eps, unbiased_std=False),
            _scores_only, eps=(1e-6, 1e-3, 0.5)),
      _case("moving_average_baseline", pg.moving_average_baseline,
            lambda s: (_state(_rng(s)),)),
      _case("update_moving_average",
            lambda st, s, decay: pg.update_moving_average(st, s, decay), _state_scores,
            decay=DECAY),
      _case("moving_average_advantages",
            lambda st, s, decay: pg.moving_average_advantages(s, st, decay), _state_scores,
            decay=DECAY),
  ]


def _ppo_args(seed):
  rng = _rng(seed)
  logp_BxT = _logp_BxT(rng)
  old_BxT = logp_BxT + _f32(rng, B, T, scale=0.5)
  adv_BxT, mask_BxT = _f32(rng, B, T), _mask_BxT(rng)
  old_BxT[1, 0], adv_BxT[1, 0] = logp_BxT[1, 0] - 2.0, -1.0  # ρ ≈ 7.4 with A < 0: dual clip
  return logp_BxT, old_BxT, adv_BxT, mask_BxT


def _loss_cases():
  cases = [
      _case("reinforce_sequence_surrogate", pg.reinforce_sequence_surrogate,
            lambda s: (_f32(_rng(s), B), _f32(_rng(s + 7), B))),
      _case("reinforce_token_surrogate", pg.reinforce_token_surrogate,
            lambda s: (_logp_BxT(_rng(s)), _f32(_rng(s + 7), B, T), _mask_BxT(_rng(s)))),
      _case("ppo_clipped_surrogate",
            lambda a, b, c, m, eps_low, eps_high, dual_clip: pg.ppo_clipped_surrogate(
                a, b, c, m, eps_low, eps_high, dual_clip),
            _ppo_args, eps_low=(0.2, 0.1, 0.5), eps_high=(0.28, 0.2, 1.0),
            dual_clip=(3.0, 0.0, 1.5)),
      _case("grad_ppo_clipped_surrogate",
            lambda a, b, c, m, eps_low: jax.grad(
                lambda x: jnp.sum(pg.ppo_clipped_surrogate(x, b, c, m, eps_low)[0]))(a),
            _ppo_args, eps_low=(0.2, 0.1, 0.5)),
      _case("clipped_value_loss",
            lambda v, o, r, m, clip: pg.clipped_value_loss(v, o, r, m, clip),
            lambda s: (*_rvm(s)[:2], _f32(_rng(s + 7), B, T), _mask_BxT(_rng(s))),
            clip=(0.2, 0.05, 1.0)),
      _case("entropy_bonus", pg.entropy_bonus, _x_mask),
  ]
  for mode in pg.AGGREGATION_MODES:
    cases.append(_case(f"aggregate_loss[{mode}]",
                       lambda x, m, mode=mode: pg.aggregate_loss(x, m, mode), _x_mask))
  cases.append(_case("aggregate_loss[seq-mean-token-sum-norm,normaliser]",
                     lambda x, m, normaliser: pg.aggregate_loss(
                         x, m, "seq-mean-token-sum-norm", normaliser), _x_mask,
                     normaliser=(6.0, 1.0, 100.0)))
  return cases


# Registry cases: the whole `pg.make_hparams` dict is traced; every value valid and distinct.
HP_VALUES = {
    "learning_rate": (1e-3, 3e-4, 1e-2),
    "weight_decay": (0.0, 0.01, 0.1),
    "gamma": (1.0, 0.9, 0.5),
    "lam": (0.95, 0.5, 0.0),
    "kl_coef": (0.1, 0.0, 1.0),
    "baseline_decay": (0.9, 0.5, 0.0),
    "adv_eps": (1e-6, 1e-3, 0.5),
    "ppo_eps_low": (0.2, 0.1, 0.5),
    "ppo_eps_high": (0.28, 0.2, 1.0),
    "dual_clip": (3.0, 0.0, 1.5),
    "gspo_eps_low": (3e-4, 0.5, 0.9), "gspo_eps_high": (4e-4, 1.0, 3.0),
    "gmpo_eps_low": (0.4, 0.1, 1.0), "gmpo_eps_high": (0.4, 0.2, 1.0),
    "sapo_tau_pos": (1.0, 0.5, 4.0), "sapo_tau_neg": (1.05, 2.0, 0.5),
    "cispo_eps_low": (1.0, 0.2, 0.5), "cispo_eps_high": (0.2, 0.28, 4.0),
    "dppo_tv_low": (0.15, 0.05, 0.5), "dppo_tv_high": (0.15, 0.1, 0.3),
    "dppo_kl_low": (0.05, 0.01, 0.2), "dppo_kl_high": (0.05, 0.02, 0.3),
    "dppo_ratio_cap": (20.0, 2.0, 5.0), "tis_cap": (2.0, 1.5, 5.0),
    "rc_cap": (2.0, 1.5, 5.0), "rc_low": (0.5, 0.2, 0.8), "rc_high": (2.0, 1.5, 3.0),
    "opsm_delta": (1e-3, 0.0, 0.1), "overlong_penalty_factor": (1.0, 0.5, 2.0),
    "clip_cov_ratio": (0.2, 0.5, 1.0), "clip_cov_low": (-1.0, 0.0, -5.0),
    "clip_cov_high": (5.0, 0.1, 0.5), "kl_cov_ratio": (0.2, 0.5, 1.0),
    "kl_cov_coef": (1.0, 0.0, 3.0),
    "value_clip": (0.2, 0.1, 1.0),
    "value_coef": (0.5, 1.0, 0.1),
    "entropy_coef": (0.0, 0.01, 0.1),
    "temperature": (1.0, 0.7, 2.0),
}
ESTIMATOR_SWEEPS = {
    "none": ("kl_coef", "gamma"),
    "moving_average": ("baseline_decay", "kl_coef"),
    "group_mean": ("kl_coef",),
    "rloo": ("kl_coef",),
    "grpo": ("adv_eps", "kl_coef"),
    "grpo_population": ("adv_eps",),
    "reinforce_pp": ("gamma", "kl_coef", "adv_eps"),
    "value": ("gamma", "kl_coef"),
    "gae": ("gamma", "lam", "kl_coef"),
}
LOSS_SWEEPS = {"ppo": ("ppo_eps_low", "ppo_eps_high", "dual_clip"), "reinforce": (),
               # (these inputs have no response with A < 0 and s < 1, where ε_low acts; its
               # sweep is in test_sequence_losses.py)
               "gspo": ("gspo_eps_high",),
               "gspo_token": ("gspo_eps_low", "gspo_eps_high"),
               "gmpo": ("gmpo_eps_low", "gmpo_eps_high"),
               "sapo": ("sapo_tau_pos", "sapo_tau_neg"),
               "cispo": ("cispo_eps_low", "cispo_eps_high"),
               "dppo_tv": ("dppo_tv_low", "dppo_tv_high", "dppo_ratio_cap"),
               "dppo_kl": ("dppo_kl_low", "dppo_kl_high", "dppo_ratio_cap"),
               "tis": ("tis_cap",),
               "clip_cov": ("clip_cov_ratio", "clip_cov_low", "clip_cov_high"),
               "kl_cov": ("kl_cov_ratio", "kl_cov_coef")}


def _adv_inputs(seed, group_size=G):
  rng = _rng(seed)
  inputs = pg.AdvantageInputs(scores_B=_scores_B(rng), mask_BxT=_mask_BxT(rng),
                              values_BxT=_f32(rng, B, T), kl_BxT=_f32(rng, B, T, scale=0.3),
                              group_size=group_size, baseline_scores_B=_scores_B(rng),
                              components_KxB=np.stack([_scores_B(rng), _scores_B(rng)]),
                              component_weights_K=np.asarray([1.0, 0.5], np.float32))
  return inputs, _state(rng)


def _registry_cases():
  cases = []
  for name in sorted(pg.ADVANTAGE_ESTIMATORS):
    def estimate(inputs, state, name=name, **hp):
      return pg.get_advantage(name)(inputs, hp, state)
    cases.append(Case(f"advantage[{name}]", estimate, _adv_inputs, HP_VALUES,
                      ESTIMATOR_SWEEPS.get(name, ("kl_coef", "gamma")), use_make_hparams=True))
  for name in sorted(pg.POLICY_LOSSES):
    def loss(*arrays, name=name, **hp):
      return pg.get_policy_loss(name)(pg.PolicyLossInputs(*arrays), hp)
    cases.append(Case(f"policy_loss[{name}]", loss, _ppo_args, HP_VALUES,
                      LOSS_SWEEPS.get(name, ()), use_make_hparams=True))
  return cases


CASES = (_logprob_cases() + _masked_cases() + _kl_cases() + _multistep_cases()
         + _baseline_cases() + _loss_cases() + _registry_cases())
SWEEPS = [(c, name) for c in CASES for name in c.sweep]


def _ids(x):
  return x.id if isinstance(x, Case) else None


# ---------------------------------------------------------------------------------------------
# Helpers.

@pytest.fixture(autouse=True)
def _fresh_trace_counter():
  chex.clear_trace_counter()  # `assert_max_traces` keys its counter by source, shared by params
  yield
  chex.clear_trace_counter()


def _call(case):
  def call(args, hp):
    return case.fn(*args, **hp)
  return call


_JITTED = {}


def _jitted(case):
  """One jitted unbatched function per case, shared by the tests (compiled once per case)."""
  if case.id not in _JITTED:
    _JITTED[case.id] = jax.jit(_call(case))
  return _JITTED[case.id]


def _stack(trees):
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def assert_trees_close(actual, expected, rtol=RTOL, atol=ATOL):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    assert np.shape(a) == np.shape(e)
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64),
                               rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# 1. jit and vmap.

@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_jit_matches_eager(case):
  args, hp = case.make_args(0), case.hp(0)
  expected = _call(case)(args, hp)
  assert_trees_close(_jitted(case)(args, hp), expected)
  for leaf in jax.tree.leaves(expected):
    assert np.all(np.isfinite(np.asarray(leaf))), case.id


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_vmap_over_seed_axis_matches_loop(case):
  per_seed = [case.make_args(s) for s in range(N_SEEDS)]
  hp = case.hp(0)
  batched = jax.jit(jax.vmap(_call(case), in_axes=(0, None)))(_stack(per_seed), hp)
  looped = _stack([_jitted(case)(args, hp) for args in per_seed])
  assert_trees_close(batched, looped)


@pytest.mark.parametrize("case,name", SWEEPS,
                         ids=[f"{c.id}-{n}" for c, n in SWEEPS])
def test_vmap_over_swept_hyperparameter_matches_loop(case, name):
  args = case.make_args(0)
  hp_sweep = case.hp_sweep(name)
  assert hp_sweep[name].shape == (3,)
  in_axes = (None, {k: (0 if k == name else None) for k in hp_sweep})
  batched = jax.jit(jax.vmap(_call(case), in_axes=in_axes))(args, hp_sweep)
  looped = _stack([_jitted(case)(args, {**hp_sweep, name: hp_sweep[name][j]})
                   for j in range(3)])
  assert_trees_close(batched, looped)
  # The sweep is not a no-op: different values give different results.
  leaves = [np.asarray(x) for x in jax.tree.leaves(looped)]
  assert any(not np.allclose(x[0], x[1]) or not np.allclose(x[0], x[2]) for x in leaves), (
      f"sweeping {name} changed nothing in {case.id}")


def test_init_baseline_state_under_jit_and_vmap():
  state = pg.init_baseline_state()
  assert_trees_close(jax.jit(pg.init_baseline_state)(), state)
  batched = jax.vmap(lambda seed: pg.init_baseline_state())(jnp.arange(N_SEEDS))
  assert_trees_close(batched, _stack([state] * N_SEEDS))
  assert float(pg.moving_average_baseline(state)) == 0.0


# ---------------------------------------------------------------------------------------------
# 2. No retracing / recompiling for new values of the same shapes.

@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_new_values_do_not_retrace(case):
  jitted = jax.jit(chex.assert_max_traces(_call(case), n=1))
  args0, args1 = case.make_args(0), case.make_args(1)
  hp0, hp1 = case.hp(0), case.hp(1)
  assert all(float(hp0[k]) != float(hp1[k]) for k in hp0)
  jitted(args0, hp0)
  out1 = jitted(args1, hp1)  # raises AssertionError if traced again
  assert jitted._cache_size() == 1
  assert_trees_close(out1, _jitted(case)(args1, hp1))  # the new values were really used


def test_trace_counter_and_cache_size_detect_a_baked_in_hyperparameter():
  """Sanity check of the two counters used above: a static Python float does retrace."""
  rewards_BxT, _, mask_BxT = _rvm(0)

  def returns(rewards_BxT, mask_BxT, gamma):
    return pg.discounted_returns(rewards_BxT, mask_BxT, gamma)

  counted = jax.jit(chex.assert_max_traces(returns, n=1), static_argnums=2)
  counted(rewards_BxT, mask_BxT, 0.9)
  with pytest.raises(AssertionError, match="traced > 1 times"):
    counted(rewards_BxT, mask_BxT, 0.5)

  static = jax.jit(returns, static_argnums=2)
  static(rewards_BxT, mask_BxT, 0.9)
  static(rewards_BxT, mask_BxT, 0.5)
  assert static._cache_size() == 2

  def returns_traced(rewards_BxT, mask_BxT, gamma):  # a new function: its own jit cache
    return pg.discounted_returns(rewards_BxT, mask_BxT, gamma)

  traced = jax.jit(returns_traced)
  traced(rewards_BxT, mask_BxT, jnp.float32(0.9))
  traced(rewards_BxT, mask_BxT, jnp.float32(0.5))  # same shape and dtype: no new entry
  assert traced._cache_size() == 1

  # The same counter on a registry estimator: a make_hparams dict (float32 leaves) is reused
  # across values, while a dict of Python floats (weakly typed) is a different signature.
  inputs, state = _adv_inputs(0)
  jitted = jax.jit(chex.assert_max_traces(
      lambda i, s, hp: pg.get_advantage("gae")(i, hp, s), n=1))
  jitted(inputs, state, pg.make_hparams(gamma=0.9))
  jitted(inputs, state, pg.make_hparams(gamma=0.5))
  with pytest.raises(AssertionError, match="traced > 1 times"):
    jitted(inputs, state, {k: float(v) for k, v in pg.make_hparams(gamma=0.7).items()})


# ---------------------------------------------------------------------------------------------
# 3. Bad input: a clear error naming the argument, raised at trace time.

@dataclasses.dataclass(frozen=True)
class Bad:
  id: str
  fn: Callable  # fn(*args); static/concrete configuration is closed over
  args: tuple
  exc: Any
  match: str


def _np(*shape, dtype=np.float32):
  return np.zeros(shape, dtype)


X = _np(B, T)
X_T1 = _np(B, T + 1)
LOGITS = _np(B, T, V)
TOK = _np(B, T, dtype=np.int32)
S = _np(B)
HP = pg.make_hparams()
ST = pg.init_baseline_state()


def _bad_cases():
  bad = []
  add = lambda id, fn, args, match, exc=ValueError: bad.append(Bad(id, fn, args, exc, match))

  # Log-probs, dense and chunked.
  for label, c in (("dense", None), ("chunked", CHUNK)):
    add(f"token_log_probs[{label}]-logits_rank2",
        lambda x, y, c=c: pg.token_log_probs(x, y, chunk_size=c), (X, TOK), "`logits_BxTxV`")
    add(f"token_log_probs_and_entropy[{label}]-logits_rank2",
        lambda x, y, c=c: pg.token_log_probs_and_entropy(x, y, chunk_size=c), (X, TOK),
        "`logits_BxTxV`")
    add(f"token_entropy[{label}]-logits_rank2",
        lambda x, c=c: pg.token_entropy(x, chunk_size=c), (X,), "`logits_BxTxV`")
    add(f"token_log_probs[{label}]-float_tokens",
        lambda x, y, c=c: pg.token_log_probs(x, y, chunk_size=c), (LOGITS, X), "`tokens_BxT`",
        TypeError)
    add(f"token_log_probs[{label}]-tokens_shape",
        lambda x, y, c=c: pg.token_log_probs(x, y, chunk_size=c),
        (LOGITS, _np(B, T + 1, dtype=np.int32)), "`tokens_BxT`")
    add(f"token_log_probs[{label}]-temperature_0",
        lambda x, y, c=c: pg.token_log_probs(x, y, temperature=0.0, chunk_size=c),
        (LOGITS, TOK), "`temperature`")
    add(f"token_entropy[{label}]-temperature_neg",
        lambda x, c=c: pg.token_entropy(x, temperature=-1.0, chunk_size=c), (LOGITS,),
        "`temperature`")
  add("token_log_probs-chunk_size_0", lambda x, y: pg.token_log_probs(x, y, chunk_size=0),
      (LOGITS, TOK), "`chunk_size`")
  add("sequence_log_probs-mask_shape", pg.sequence_log_probs, (X, X_T1), "`mask_BxT`")
  add("sequence_log_probs-logp_rank3", pg.sequence_log_probs, (LOGITS, X), "`logp_BxT`")

  # Masked ops.
  for name in ("masked_sum", "masked_mean", "masked_var", "masked_whiten"):
    add(f"{name}-mask_shape", getattr(pg, name), (X, X_T1), "`mask_BxT`")
  add("last_token_mask-rank1", pg.last_token_mask, (S,), "`mask_BxT`")

  # KL.
  for name in ("log_ratio", "kl_k1", "kl_k2", "kl_k3"):
    add(f"{name}-ref_shape", getattr(pg, name), (X, X_T1), "`ref_logp_BxT`")
  add("kl_estimate-ref_shape", lambda a, b: pg.kl_estimate(a, b, "k3"), (X, X_T1),
      "`ref_logp_BxT`")
  add("kl_estimate-unknown_kind", lambda a, b: pg.kl_estimate(a, b, "k4"), (X, X),
      r"`kind`.*'k4'.*known.*k1.*k2.*k3")

  # Rewards.
  add("per_token_rewards-scores_shape", pg.per_token_rewards, (_np(B + 1), X), "`scores_B`")
  add("per_token_rewards-mask_rank1", pg.per_token_rewards, (S, S), "`mask_BxT`")
  add("per_token_rewards-kl_shape", pg.per_token_rewards, (S, X, X_T1), "`kl_BxT`")
  add("per_token_rewards-kl_coef_neg", lambda s, m, k: pg.per_token_rewards(s, m, k, -0.1),
      (S, X, X), "`kl_coef`")

  # Multistep: shapes, ranks, γ and λ out of [0, 1] (and NaN).
  add("discounted_returns-mask_shape", lambda r, m: pg.discounted_returns(r, m, 0.9),
      (X, X_T1), "`mask_BxT`")
  add("discounted_returns-rewards_rank1", lambda r, m: pg.discounted_returns(r, m, 0.9),
      (S, S), "`rewards_BxT`")
  for g in (1.1, -0.1, float("nan")):
    add(f"discounted_returns-gamma={g}", lambda r, m, g=g: pg.discounted_returns(r, m, g),
        (X, X), "`gamma`")
  for name in ("generalized_advantage_estimation",
               "generalized_advantage_estimation_associative", "lambda_returns"):
    fn = getattr(pg, name)
    add(f"{name}-values_shape", lambda r, v, m, fn=fn: fn(r, v, m, 0.9, 0.9), (X, X_T1, X),
        "`values_BxT`")
    add(f"{name}-mask_shape", lambda r, v, m, fn=fn: fn(r, v, m, 0.9, 0.9), (X, X, X_T1),
        "`mask_BxT`")
    add(f"{name}-rewards_rank3", lambda r, v, m, fn=fn: fn(r, v, m, 0.9, 0.9),
        (LOGITS, LOGITS, LOGITS), "`rewards_BxT`")
    for g in (1.5, -0.5):
      add(f"{name}-gamma={g}", lambda r, v, m, fn=fn, g=g: fn(r, v, m, g, 0.9), (X, X, X),
          "`gamma`")
    for lam in (1.5, -0.5, float("nan")):
      add(f"{name}-lam={lam}", lambda r, v, m, fn=fn, lam=lam: fn(r, v, m, 0.9, lam), (X, X, X),
          "`lam`")

  # Baselines.
  add("rloo_advantages-group_size_1", lambda s: pg.rloo_advantages(s, 1), (S,),
      r"`group_size` must be >= 2")
  for name in ("group_mean_advantages", "rloo_advantages", "grpo_advantages"):
    fn = getattr(pg, name)
    add(f"{name}-batch_not_divisible", lambda s, fn=fn: fn(s, 2), (_np(5),),
        r"batch size 5 .*`group_size` 2")
    add(f"{name}-group_size_float", lambda s, fn=fn: fn(s, 2.0), (S,), "`group_size`",
        TypeError)
    add(f"{name}-group_size_0", lambda s, fn=fn: fn(s, 0), (S,), "`group_size`")
    add(f"{name}-scores_rank2", lambda s, fn=fn: fn(s, 2), (X,), "`scores_B`")
  add("grpo_advantages-eps_neg", lambda s: pg.grpo_advantages(s, 2, -1.0), (S,), "`eps`")
  add("update_moving_average-decay_1", lambda st, s: pg.update_moving_average(st, s, 1.0),
      (ST, S), "`decay`")
  add("update_moving_average-scores_rank2", lambda st, s: pg.update_moving_average(st, s, 0.9),
      (ST, X), "`scores_B`")
  add("moving_average_advantages-decay_neg",
      lambda st, s: pg.moving_average_advantages(s, st, -0.1), (ST, S), "`decay`")
  add("moving_average_advantages-scores_rank2",
      lambda st, s: pg.moving_average_advantages(s, st, 0.9), (ST, X), "`scores_B`")

  # Policy losses.
  add("reinforce_sequence_surrogate-adv_shape", pg.reinforce_sequence_surrogate,
      (S, _np(B + 1)), "`advantages_B`")
  add("reinforce_sequence_surrogate-logp_rank2", pg.reinforce_sequence_surrogate, (X, X),
      "`seq_logp_B`")
  add("reinforce_token_surrogate-adv_shape", pg.reinforce_token_surrogate, (X, X_T1, X),
      "`advantages_BxT`")
  add("reinforce_token_surrogate-mask_shape", pg.reinforce_token_surrogate, (X, X, X_T1),
      "`mask_BxT`")
  add("ppo_clipped_surrogate-old_shape", pg.ppo_clipped_surrogate, (X, X_T1, X, X),
      "`old_logp_BxT`")
  add("ppo_clipped_surrogate-mask_shape", pg.ppo_clipped_surrogate, (X, X, X, X_T1),
      "`mask_BxT`")
  for kw, value in (("eps_low", 1.0), ("eps_low", -0.1), ("eps_high", -0.1),
                    ("dual_clip", -1.0)):
    add(f"ppo_clipped_surrogate-{kw}={value}",
        lambda a, b, c, m, kw=kw, value=value: pg.ppo_clipped_surrogate(a, b, c, m,
                                                                        **{kw: value}),
        (X, X, X, X), f"`{kw}`")
  add("clipped_value_loss-returns_shape", pg.clipped_value_loss, (X, X, X_T1, X),
      "`returns_BxT`")
  add("clipped_value_loss-clip_0", lambda v, o, r, m: pg.clipped_value_loss(v, o, r, m, 0.0),
      (X, X, X, X), "`clip`")
  add("entropy_bonus-mask_shape", pg.entropy_bonus, (X, X_T1), "`mask_BxT`")

  # Aggregation.
  add("aggregate_loss-unknown_mode", lambda x, m: pg.aggregate_loss(x, m, "mean"), (X, X),
      r"`mode` 'mean'; known: " + re.escape(", ".join(pg.AGGREGATION_MODES)))
  for mode in pg.AGGREGATION_MODES:
    add(f"aggregate_loss[{mode}]-mask_shape",
        lambda x, m, mode=mode: pg.aggregate_loss(x, m, mode), (X, X_T1), "`mask_BxT`")
    add(f"aggregate_loss[{mode}]-loss_rank1",
        lambda x, m, mode=mode: pg.aggregate_loss(x, m, mode), (S, S), "`loss_BxT`")
  add("aggregate_loss-normaliser_0",
      lambda x, m: pg.aggregate_loss(x, m, "seq-mean-token-sum-norm", 0.0), (X, X),
      "`normaliser`")

  # Registry estimators and losses.
  def estimator(name, **hp_overrides):
    hp = {**HP, **{k: jnp.float32(v) for k, v in hp_overrides.items()}}
    return lambda inputs, state: pg.get_advantage(name)(inputs, hp, state)

  ins = lambda **kw: pg.AdvantageInputs(**{"scores_B": S, "mask_BxT": X, "values_BxT": X,
                                           "kl_BxT": X, "group_size": G, **kw})
  add("advantage[rloo]-group_size_1", estimator("rloo"), (ins(group_size=1), ST),
      r"`group_size` must be >= 2")
  for name in ("gae", "value"):
    add(f"advantage[{name}]-no_values", estimator(name), (ins(values_BxT=None), ST),
        "`values_BxT`")
    for shape in ((B, 1), (B, T + 1)):
      add(f"advantage[{name}]-values_shape{shape}", estimator(name),
          (ins(values_BxT=_np(*shape)), ST), "`values_BxT`")
  for lam in (1.5, -0.5):
    add(f"advantage[gae]-lam={lam}", estimator("gae", lam=lam), (ins(), ST), "`lam`")
  add("advantage[gae]-gamma=1.5", estimator("gae", gamma=1.5), (ins(), ST), "`gamma`")
  for name in sorted(pg.ADVANTAGE_ESTIMATORS):
    if name in ("group_mean", "rloo", "grpo", "grpo_population"):
      add(f"advantage[{name}]-batch_not_divisible", estimator(name),
          (ins(scores_B=_np(5), mask_BxT=_np(5, T), values_BxT=_np(5, T), kl_BxT=_np(5, T)),
           ST), r"batch size 5 .*`group_size` 2")
    add(f"advantage[{name}]-scores_shape", estimator(name), (ins(scores_B=_np(B + G)), ST),
        "`scores_B`")
    add(f"advantage[{name}]-kl_shape", estimator(name), (ins(kl_BxT=X_T1), ST), "`kl_BxT`")
    add(f"advantage[{name}]-mask_rank1", estimator(name),
        (ins(mask_BxT=S, values_BxT=S, kl_BxT=None), ST), "`mask_BxT`")
  for name in sorted(pg.POLICY_LOSSES):
    loss = lambda *a, name=name: pg.get_policy_loss(name)(pg.PolicyLossInputs(*a), HP)
    for shape in ((B, 1), (B, T + 1)):
      add(f"policy_loss[{name}]-old_logp_shape{shape}", loss, (X, _np(*shape), X, X),
          "`old_logp_BxT`")
    add(f"policy_loss[{name}]-advantages_shape", loss, (X, X, X_T1, X), "`advantages_BxT`")
    add(f"policy_loss[{name}]-mask_shape", loss, (X, X, X, X_T1), "`mask_BxT`")
  return bad


BAD = _bad_cases()


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
def test_bad_input_raises_naming_the_argument(bad):
  with pytest.raises(bad.exc, match=bad.match):
    bad.fn(*bad.args)


def test_no_compiles_detects_a_compile():
  """Sanity check of the monitor used below: it does see a compile."""
  with pytest.raises(AssertionError, match="compiled before raising"):
    with no_compiles():
      jax.jit(lambda x_B: 3.0 * x_B + 1.0)(np.ones(B, np.float32))


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
def test_bad_input_raises_at_trace_time_before_compiling(bad):
  with no_compiles():
    with pytest.raises(bad.exc, match=bad.match):
      jax.jit(bad.fn)(*bad.args)


def test_every_public_function_is_covered():
  """Every callable exported by `pg` appears in a jit/vmap case or is covered separately."""
  exported = {n for n in dir(pg) if not n.startswith("_") and callable(getattr(pg, n))
              and getattr(getattr(pg, n), "__module__", "").startswith("pg.")
              and not isinstance(getattr(pg, n), type)}
  covered = {c.id.split("[")[0] for c in CASES} | {
      c.id.split("[")[0].removeprefix("grad_") for c in CASES}
  covered |= {"init_baseline_state", "make_hparams", "get_advantage", "get_policy_loss",
              "register_advantage", "register_policy_loss"}
  # The bodies of registered losses and estimators: each runs under jit and vmap (and is refused
  # bad shapes) through its registration's case above.
  covered |= {"gspo_surrogate", "gspo_token_surrogate", "gspo_sequence_ratio", "gmpo_surrogate",
              "sapo_surrogate", "sapo_gate", "cispo_surrogate", "dppo_surrogate", "binary_kl",
              "truncated_is_surrogate", "opo_advantages", "passk_advantages",
              "maxrl_advantages", "clip_cov_surrogate", "kl_cov_surrogate",
              "token_covariance"}
  assert exported - covered == set()


# ---------------------------------------------------------------------------------------------
# Hyperparameters.

def test_make_hparams_unknown_name_lists_the_known_ones():
  with pytest.raises(KeyError, match=r"unknown hyperparameter\(s\) \['lambda'\]") as e:
    pg.make_hparams(**{"lambda": 0.5})
  for name in HP_VALUES:
    assert name in str(e.value)


@pytest.mark.parametrize("name,value", [
    ("lam", 1.5), ("lam", -0.1), ("gamma", 1.01), ("gamma", -0.5), ("gamma", float("nan")),
    ("kl_coef", -1.0), ("baseline_decay", 1.0), ("adv_eps", 0.0), ("ppo_eps_low", 1.0),
    ("ppo_eps_high", -0.1), ("value_clip", 0.0), ("temperature", 0.0),
    ("learning_rate", 0.0), ("lam", [0.5, 1.0, 1.5]),
])
def test_make_hparams_out_of_range_names_the_argument(name, value):
  with pytest.raises(ValueError, match=f"`{name}`"):
    pg.make_hparams(**{name: value})


def test_make_hparams_is_float32_scalars_and_accepts_sweep_vectors():
  hp = pg.make_hparams(gamma=0.5)
  assert set(hp) == set(HP_VALUES)
  assert all(v.dtype == jnp.float32 and v.shape == () for v in hp.values())
  assert float(hp["gamma"]) == 0.5
  assert pg.make_hparams(lam=[0.0, 0.5, 1.0])["lam"].shape == (3,)


# ---------------------------------------------------------------------------------------------
# Registries.

@pytest.fixture
def restore_registries():
  saved = dict(pg.ADVANTAGE_ESTIMATORS), dict(pg.POLICY_LOSSES)
  yield
  pg.ADVANTAGE_ESTIMATORS.clear()
  pg.ADVANTAGE_ESTIMATORS.update(saved[0])
  pg.POLICY_LOSSES.clear()
  pg.POLICY_LOSSES.update(saved[1])
  assert pg.ADVANTAGE_ESTIMATORS == saved[0] and pg.POLICY_LOSSES == saved[1]


@pytest.mark.parametrize("getter,table,kind", [
    (pg.get_advantage, pg.ADVANTAGE_ESTIMATORS, "advantage estimator"),
    (pg.get_policy_loss, pg.POLICY_LOSSES, "policy loss"),
], ids=["get_advantage", "get_policy_loss"])
def test_unknown_registry_name_lists_the_known_ones(getter, table, kind):
  with pytest.raises(KeyError, match=f"unknown {kind} 'nope'; known: ") as e:
    getter("nope")
  assert table
  for name in table:
    assert repr(name).strip("'") in str(e.value)
  assert ", ".join(sorted(table)) in str(e.value)


def test_builtin_registry_contents():
  assert set(ESTIMATOR_SWEEPS) <= set(pg.ADVANTAGE_ESTIMATORS)
  assert set(LOSS_SWEEPS) <= set(pg.POLICY_LOSSES)


@pytest.mark.parametrize("register,expected", [
    (pg.register_advantage, "fn(inputs: AdvantageInputs, hp: dict, state) -> AdvantageOutputs"),
    (pg.register_policy_loss, "fn(inputs: PolicyLossInputs, hp: dict) -> (loss_BxT, metrics)"),
], ids=["register_advantage", "register_policy_loss"])
def test_register_wrong_signature_raises_type_error_showing_the_expected_one(
    restore_registries, register, expected):
  def too_few(inputs):
    return inputs

  def too_many(inputs, hp, state, extra, more):
    return inputs

  def required_kw(inputs, hp, state=None, *, key):
    return inputs

  for fn in (too_few, too_many, required_kw):
    with pytest.raises(TypeError, match=re.escape(expected)) as e:
      register("bad")(fn)
    assert fn.__name__ in str(e.value)
  with pytest.raises(TypeError, match="callable"):
    register("bad")(42)
  with pytest.raises(TypeError, match="non-empty string"):
    register("")(lambda inputs, hp, state=None: None)
  assert "bad" not in pg.ADVANTAGE_ESTIMATORS and "bad" not in pg.POLICY_LOSSES


def test_register_duplicate_raises_unless_override(restore_registries):
  original = pg.get_advantage("none")

  def replacement(inputs, hp, state):
    return original(inputs, hp, state)

  with pytest.raises(ValueError, match="'none' is already registered; pass override=True"):
    pg.register_advantage("none")(replacement)
  assert pg.get_advantage("none") is original
  pg.register_advantage("none", override=True)(replacement)
  assert pg.get_advantage("none").fn is replacement

  def loss(inputs, hp):
    return pg.get_policy_loss("reinforce")(inputs, hp)

  with pytest.raises(ValueError, match="'ppo' is already registered"):
    pg.register_policy_loss("ppo")(loss)


def test_newly_registered_functions_are_selectable_and_jittable(restore_registries):
  @pg.register_advantage("my_estimator")
  def my_estimator(inputs, hp, state):
    m_BxT = jnp.asarray(inputs.mask_BxT, jnp.float32)
    adv_BxT = (inputs.scores_B[:, None] - 0.5) * m_BxT
    return pg.AdvantageOutputs(adv_BxT, pg.discounted_returns(adv_BxT, m_BxT, hp["gamma"]),
                               state)

  @pg.register_policy_loss("my_loss")
  def my_loss(inputs, hp):
    return -inputs.advantages_BxT * inputs.logp_BxT * inputs.mask_BxT, {}

  assert pg.get_advantage("my_estimator").fn is my_estimator
  assert pg.get_policy_loss("my_loss").fn is my_loss
  with pytest.raises(KeyError, match="my_estimator"):
    pg.get_advantage("missing")

  inputs, state = _adv_inputs(0)
  est = jax.jit(chex.assert_max_traces(
      lambda i, s, hp: pg.get_advantage("my_estimator")(i, hp, s), n=1))
  out = est(inputs, state, pg.make_hparams(gamma=0.9))
  est(inputs, state, pg.make_hparams(gamma=0.5))
  assert out.advantages_BxT.shape == (B, T)
  loss_BxT, _ = pg.get_policy_loss("my_loss")(pg.PolicyLossInputs(*_ppo_args(0)), HP)
  assert loss_BxT.shape == (B, T)
