"""Property tests (hypothesis): the core pure functions against NumPy / plain-Python references.

Shapes, masks and values are random: B in 1..6, T in 1..8, V in 2..7 (from a fixed set, see
below); masks with empty rows, full rows, prefixes and gaps inside a row; values up to large
magnitudes (1e3-1e4) where a function promises clamping or finiteness. Every reference below
is written from the documented definition, in float64, and never calls `pg` (so each test can
fail).

Speed: every new shape compiles, eagerly (per primitive) or under `jit` (per program), and a
compile costs ~0.05-0.2 s on a 2-core CPU. So each group of tests calls one `jax.jit`-compiled
*probe* that returns everything the group checks, with swept values (γ, λ, β, ε, τ, clip
ranges, ...) traced, and shapes are drawn from a fixed set that spans the ranges (B = 1 and 6,
T = 1 and 8, ...): about 130 compiles in all, ~20 s on a busy 2-core CPU. `derandomize=True`
makes the examples the same on every run (CI is deterministic).

Tolerances. pg computes in float32 (machine ε ≈ 1.2e-7); the references in float64. A bound is
`rtol·|expected| + atol` with atol scaled by the magnitude of the *inputs* that enter the result
(a sum of n float32 terms is exact to about n·ε·Σ|terms|), so a test with values of 1e3 is as
strict, relatively, as one with values of 1. Looser bounds are explained where they appear.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pg

EPS32 = float(np.finfo(np.float32).eps)
RTOL = 1e-5

PROPERTY = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROPERTY_FEW = settings(PROPERTY, max_examples=20)  # the tests with more shapes to compile

# [B, T] shapes: single row / single token / both / the largest, and some in between.
SHAPES_BT = ((1, 1), (1, 8), (6, 1), (2, 3), (3, 5), (6, 8))
# [B, T, V] shapes for the log-prob tests: V = 2 and 7 (the extremes), odd sizes between.
SHAPES_BTV = ((2, 3, 7), (1, 1, 2), (6, 8, 5), (3, 1, 3))


# ----------------------------------------------------------------------------- strategies


def floats(bound):
  """float32 values in [−bound, bound], no NaN / inf / subnormals (XLA's CPU flushes those)."""
  return st.floats(-bound, bound, width=32, allow_nan=False, allow_infinity=False,
                   allow_subnormal=False)


def unit_interval():
  return st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def masks(draw, B, T):
  """A {0, 1} float mask [B, T]: each row empty, full, a prefix, a prefix with gaps, or any."""
  rows = []
  for _ in range(B):
    kind = draw(st.sampled_from(["empty", "full", "prefix", "gappy", "any"]))
    if kind == "empty":
      row = np.zeros(T, bool)
    elif kind == "full":
      row = np.ones(T, bool)
    elif kind == "any":
      row = draw(hnp.arrays(bool, T))
    else:
      row = np.arange(T) < draw(st.integers(0, T))
      if kind == "gappy":
        row = row & draw(hnp.arrays(bool, T))
    rows.append(row)
  return np.stack(rows).astype(np.float32)


@st.composite
def batch(draw, n_arrays, bounds=(1.0, 10.0, 1e3)):
  """(mask_BxT, [x_BxT, ...], bound): a shape from SHAPES_BT, a random mask and `n_arrays`
  float32 arrays whose magnitude bound is drawn from `bounds` (the same for all of them)."""
  B, T = draw(st.sampled_from(SHAPES_BT))
  mask = draw(masks(B, T))
  bound = draw(st.sampled_from(bounds))
  xs = [draw(hnp.arrays(np.float32, (B, T), elements=floats(bound))) for _ in range(n_arrays)]
  return mask, xs, bound


def f64(x):
  return np.asarray(x, np.float64)


def assert_close(got, want, atol, rtol=RTOL):
  """|got − want| ≤ rtol·|want| + atol elementwise (atol may be an array), got finite."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  assert np.all(np.isfinite(got)), f"non-finite output: {got}"
  bound = rtol * np.abs(want) + atol + 1e-30  # XLA's CPU flushes subnormal results to 0
  bad = ~(np.abs(got - want) <= bound)
  assert not np.any(bad), (f"{bad.sum()} of {bad.size} off: got {got[bad]}, want {want[bad]}, "
                           f"bound {np.broadcast_to(bound, bad.shape)[bad]}")


# ----------------------------------------------------------------------------- masked.py


@jax.jit
def masked_probe(x, m, eps):
  return {"sum": [pg.masked_sum(x, m, axis=a) for a in (None, 0, 1)],
          "mean": [pg.masked_mean(x, m, axis=a) for a in (None, 0, 1)],
          "var": [pg.masked_var(x, m, unbiased=u) for u in (False, True)],
          "whiten": [pg.masked_whiten(x, m, eps=eps, shift_mean=s) for s in (False, True)],
          "last": pg.last_token_mask(m)}


def sum_tol(x, m, axis):
  """A float32 sum of n terms is exact to n·ε·Σ|terms| (n ≤ 48 here)."""
  n = x.size if axis is None else x.shape[axis]
  return 2 * n * EPS32 * np.sum(np.abs(f64(x)) * (m > 0), axis=axis)


@PROPERTY
@given(batch(1))
def test_masked_sum_and_mean(case):
  m, (x,), _ = case
  out = masked_probe(x, m, 1e-8)
  keep = m > 0
  for i, axis in enumerate((None, 0, 1)):
    want_sum = np.sum(np.where(keep, f64(x), 0.0), axis=axis)
    count = np.sum(keep, axis=axis)
    want_mean = np.where(count > 0, want_sum / np.maximum(count, 1), 0.0)  # 0 on empty slices
    tol = sum_tol(x, m, axis)
    assert_close(out["sum"][i], want_sum, tol)
    assert_close(out["mean"][i], want_mean, tol / np.maximum(count, 1))


def var_reference(x, m, unbiased):
  """(variance, mean, n) of the unmasked entries; n ≤ 1 (Bessel) or n = 0 gives 0, not NaN."""
  sel = f64(x)[m > 0]
  n = sel.size
  if n == 0:
    return 0.0, 0.0, n
  mu = sel.mean()
  ss = np.sum((sel - mu) ** 2)
  return ss / max(n - 1 if unbiased else n, 1), mu, n


@PROPERTY
@given(batch(1))
def test_masked_var(case):
  m, (x,), _ = case
  out = masked_probe(x, m, 1e-8)
  sel = f64(x)[m > 0]
  for i, unbiased in enumerate((False, True)):
    want, mu, n = var_reference(x, m, unbiased)
    # The float32 mean is off by δ ≈ n·ε·max|x|; that moves Σ(x − μ)² by 2δ·Σ|x − μ| + n·δ²,
    # plus n·ε relative rounding of the squares and their sum.
    delta = 2 * max(n, 1) * EPS32 * np.max(np.abs(sel), initial=0.0)
    spread = np.sum(np.abs(sel - mu)) if n else 0.0
    ss = want * max(n - 1 if unbiased else n, 1)
    atol = (2 * delta * spread + n * delta ** 2 + 4 * n * EPS32 * ss) / max(n - 1, 1)
    assert_close(out["var"][i], want, atol)


@PROPERTY
@given(batch(1), st.sampled_from([1e-8, 1e-2, 1.0]))
@example(case=(np.ones((2, 3), np.float32), [np.zeros((2, 3), np.float32)], 1.0),
         eps=1e-8)  # all values 0: 0, not NaN
@example(case=(np.zeros((2, 3), np.float32), [np.ones((2, 3), np.float32)], 1.0),
         eps=1e-8)  # nothing generated
def test_masked_whiten(case, eps):
  m, (x,), _ = case
  out = masked_probe(x, m, eps)
  var, mu, n = var_reference(x, m, unbiased=True)
  # Conditioning: the float32 mean's error δ ≈ n·ε·max|x| is divided by √(var + ε), which is
  # large when the unmasked values (nearly) tie; the bound follows it (exact ties: the test
  # below). rtol 1e-4: var's own n·ε relative error (n ≤ 48), halved by the √.
  max_abs = np.max(np.abs(f64(x)[m > 0]), initial=0.0)
  atol = 4 * max(n, 1) * EPS32 * max_abs / math.sqrt(var + eps)
  for i, shift in enumerate((False, True)):
    centred = f64(x) - mu if shift else f64(x)
    want = np.where(m > 0, centred / math.sqrt(var + eps), 0.0)
    assert_close(out["whiten"][i], want, atol, rtol=1e-4)
    assert np.all(np.asarray(out["whiten"][i])[m == 0] == 0.0)


@settings(PROPERTY, max_examples=20)
@given(st.floats(-2e3, 2e3, width=32, allow_subnormal=False), st.sampled_from(SHAPES_BT))
@example(value=1000.2999877929688, shape=(3, 5))  # gave 0.76 everywhere with a one-pass mean
def test_masked_whiten_of_tied_values_is_zero(value, shape):
  x = np.full(shape, value, np.float32)
  got = np.asarray(masked_probe(x, np.ones(shape, np.float32), 1e-8)["whiten"][1])
  np.testing.assert_array_equal(got, 0.0)  # two-pass centring: ties centre to exactly 0


@PROPERTY
@given(batch(0))
def test_last_token_mask(case):
  m, _, _ = case
  want = np.zeros_like(m)
  for b in range(m.shape[0]):
    idx = np.flatnonzero(m[b] > 0)
    if idx.size:
      want[b, idx[-1]] = 1.0
  np.testing.assert_array_equal(masked_probe(np.zeros_like(m), m, 1e-8)["last"], want)


# ----------------------------------------------------------------------------- rewards.py


@jax.jit
def rewards_probe(scores, m, kl, kl_coef):
  return pg.per_token_rewards(scores, m), pg.per_token_rewards(scores, m, kl, kl_coef)


@PROPERTY
@given(batch(1, bounds=(1.0, 1e3)), st.data(), st.floats(0.0, 10.0))
def test_per_token_rewards(case, data, kl_coef):
  m, (kl,), bound = case
  B, T = m.shape
  if data.draw(st.booleans()):  # an integer score is converted, not truncated
    scores = data.draw(hnp.arrays(np.int32, (B,), elements=st.integers(-5, 5)))
  else:
    scores = data.draw(hnp.arrays(np.float32, (B,), elements=floats(bound)))
  want_plain, want_kl = np.zeros((B, T)), np.zeros((B, T))
  for b in range(B):
    for t in range(T):
      if m[b, t] > 0:
        want_kl[b, t] -= kl_coef * float(kl[b, t])
        if not np.any(m[b, t + 1:] > 0):  # the last generated token
          want_plain[b, t] += float(scores[b])
          want_kl[b, t] += float(scores[b])
  plain, with_kl = rewards_probe(scores, m, kl, kl_coef)
  assert np.asarray(plain).dtype == np.float32 and np.asarray(with_kl).dtype == np.float32
  assert_close(plain, want_plain, 0.0)
  assert_close(with_kl, want_kl,
               4 * EPS32 * (kl_coef * np.abs(f64(kl)) + np.abs(f64(scores))[:, None]))


# ----------------------------------------------------------------------------- multistep.py


@jax.jit
def multistep_probe(r, v, m, gamma, lam):
  return {"returns": pg.discounted_returns(r, m, gamma),
          "gae": pg.generalized_advantage_estimation(r, v, m, gamma, lam),
          "gae_assoc": pg.generalized_advantage_estimation_associative(r, v, m, gamma, lam),
          "lambda_returns": pg.lambda_returns(r, v, m, gamma, lam)}


def next_generated(mrow):
  """For each generated position: the next generated position after it (None past the last)."""
  idx = np.flatnonzero(mrow > 0)
  return {int(i): (int(idx[k + 1]) if k + 1 < idx.size else None) for k, i in enumerate(idx)}


def returns_reference(r, m, gamma):
  """G at the k-th generated token = Σ_j γ^j r at the (k + j)-th generated token (closed form)."""
  out = np.zeros(r.shape)
  for b in range(r.shape[0]):
    idx = np.flatnonzero(m[b] > 0)
    for k, t in enumerate(idx):
      out[b, t] = sum(gamma ** j * float(r[b, s]) for j, s in enumerate(idx[k:]))
  return out


def gae_reference(r, v, m, gamma, lam):
  """A at the k-th generated token = Σ_j (γλ)^j δ at the (k + j)-th, δ_t = r_t + γV_{t'} − V_t
  with t' the next generated token (V = 0 past the last): the closed form, not the recursion."""
  out = np.zeros(r.shape)
  for b in range(r.shape[0]):
    nxt = next_generated(m[b])
    delta = {t: float(r[b, t]) + gamma * (0.0 if n is None else float(v[b, n])) - float(v[b, t])
             for t, n in nxt.items()}
    idx = sorted(nxt)
    for k, t in enumerate(idx):
      out[b, t] = sum((gamma * lam) ** j * delta[s] for j, s in enumerate(idx[k:]))
  return out


def lambda_returns_reference(r, v, m, gamma, lam):
  """G^λ_t = r_t + γ[(1 − λ)V_{t'} + λG^λ_{t'}], right to left over generated tokens only."""
  out = np.zeros(r.shape)
  for b in range(r.shape[0]):
    g_next, v_next = 0.0, 0.0
    for t in reversed(range(r.shape[1])):
      if m[b, t] > 0:
        g_next = float(r[b, t]) + gamma * ((1 - lam) * v_next + lam * g_next)
        v_next = float(v[b, t])
        out[b, t] = g_next
  return out


def row_scale(m, *xs):
  """Per-row Σ|x| over the unmasked entries, broadcast to [B, T]: the scale of a row's sums."""
  total = sum(np.sum(np.abs(f64(x)) * (m > 0), axis=1, keepdims=True) for x in xs)
  return np.broadcast_to(total, m.shape)


GAMMA_LAM = st.one_of(st.sampled_from([0.0, 1.0]), unit_interval())


@PROPERTY
@given(batch(2), GAMMA_LAM, GAMMA_LAM)
def test_discounted_returns(case, gamma, lam):
  m, (r, v), _ = case
  got = multistep_probe(r, v, m, gamma, lam)["returns"]
  # ≤ T multiply-adds, each exact to ε of the running |sum| ≤ Σ|r|.
  assert_close(got, returns_reference(r, m, gamma), 4 * r.shape[1] * EPS32 * row_scale(m, r))
  assert np.all(np.asarray(got)[m == 0] == 0.0)


@PROPERTY
@given(batch(2), GAMMA_LAM, GAMMA_LAM)
@example(case=(np.array([[1, 0, 1, 1, 0]], np.float32),
               [np.array([[1, 2, 3, 4, 5]], np.float32), np.array([[5, 4, 3, 2, 1]], np.float32)],
               10.0), gamma=0.5, lam=0.5)  # a gap: the gap's V (4) and r (2) are never read
def test_gae_scan_and_associative(case, gamma, lam):
  m, (r, v), _ = case
  out = multistep_probe(r, v, m, gamma, lam)
  want = gae_reference(r, v, m, gamma, lam)
  # δ has three terms of scale |r| + 2|V|; ≤ T steps of ε each (the associative scan
  # multiplies the coefficients in another order, with the same bound).
  atol = 8 * r.shape[1] * EPS32 * row_scale(m, r, v, v)
  for name in ("gae", "gae_assoc"):
    assert np.asarray(out[name]).dtype == np.float32
    assert_close(out[name], want, atol)
    assert np.all(np.asarray(out[name])[m == 0] == 0.0)


@PROPERTY
@given(batch(2), GAMMA_LAM, GAMMA_LAM)
def test_lambda_returns(case, gamma, lam):
  m, (r, v), _ = case
  got = multistep_probe(r, v, m, gamma, lam)["lambda_returns"]
  atol = 8 * r.shape[1] * EPS32 * row_scale(m, r, v, v)
  assert_close(got, lambda_returns_reference(r, v, m, gamma, lam), atol)
  assert np.all(np.asarray(got)[m == 0] == 0.0)


# ----------------------------------------------------------------------------- baselines.py


@functools.partial(jax.jit, static_argnums=1)
def baselines_probe(scores, G, eps):
  return {"group_mean": pg.group_mean_advantages(scores, G),
          "rloo": pg.rloo_advantages(scores, G) if G >= 2 else None,
          "grpo": [pg.grpo_advantages(scores, G, eps, unbiased_std=u) for u in (False, True)]}


@st.composite
def groups(draw, min_G=1, bounds=(1.0, 100.0, 1e4)):
  P = draw(st.integers(1, 3))
  G = draw(st.integers(min_G, 4))
  bound = draw(st.sampled_from(bounds))
  scores = draw(hnp.arrays(np.float32, (P * G,), elements=floats(bound)))
  return scores, G


def group_tol(scores, G, factor=1.0):
  """A group mean of G float32 values is exact to G·ε·max|R| of the group."""
  max_abs = np.max(np.abs(f64(scores)).reshape(-1, G), axis=1)
  return np.repeat(4 * G * EPS32 * max_abs * factor, G)


@PROPERTY
@given(groups())
def test_group_mean_advantages(case):
  scores, G = case
  want = [float(s) - np.mean(f64(scores[i // G * G:(i // G + 1) * G]))
          for i, s in enumerate(scores)]
  assert_close(baselines_probe(scores, G, 1e-6)["group_mean"], want, group_tol(scores, G))


@PROPERTY
@given(groups(min_G=2))
def test_rloo_advantages(case):
  scores, G = case
  want = []
  for i, s in enumerate(scores):
    others = [float(scores[j]) for j in range(i // G * G, (i // G + 1) * G) if j != i]
    want.append(float(s) - sum(others) / len(others))
  assert_close(baselines_probe(scores, G, 1e-6)["rloo"], want, group_tol(scores, G, 2.0))


@PROPERTY
@given(groups(), st.sampled_from([1e-6, 1e-2]))
def test_grpo_advantages(case, eps):
  scores, G = case
  out = baselines_probe(scores, G, eps)
  for i, unbiased in enumerate((False, True)):
    want, tol = [], []
    for p in range(len(scores) // G):
      g = f64(scores[p * G:(p + 1) * G])
      ddof = 1 if (unbiased and G > 1) else 0  # G = 1: population std, A = 0
      std = math.sqrt(np.sum((g - g.mean()) ** 2) / (G - ddof))
      want += list((g - g.mean()) / (std + eps))
      # Conditioning: the float32 mean's error (G·ε·max|R|) is divided by std + eps; large
      # only for (nearly) tied groups (exact ties: the test below).
      tol += [4 * G * EPS32 * np.max(np.abs(g)) / (std + eps)] * G
    assert_close(out["grpo"][i], want, np.asarray(tol), rtol=1e-4)  # 1e-4: std's G·ε error


@settings(PROPERTY, max_examples=20)
@given(st.floats(-1e3, 1e3, width=32, allow_subnormal=False), st.integers(2, 4))
@example(score=65.19144439697266, G=3)  # gave −0.74 for all with a one-pass mean
def test_grpo_tied_group_has_zero_advantage(score, G):
  out = baselines_probe(np.full((2 * G,), score, np.float32), G, 1e-6)
  np.testing.assert_array_equal(np.asarray(out["grpo"]), 0.0)


@jax.jit
def moving_average_probe(scores, state, decay):
  baseline = pg.moving_average_baseline(state)
  adv, new_state = pg.moving_average_advantages(scores, state, decay)
  return baseline, adv, new_state


@PROPERTY
@given(st.lists(hnp.arrays(np.float32, st.sampled_from([1, 4, 6]), elements=floats(100.0)),
                min_size=1, max_size=4),
       st.one_of(st.just(0.0), st.floats(0.0, 0.999)))
def test_moving_average_baseline(batches, decay):
  state = pg.init_baseline_state()
  means = []
  for scores in batches:
    # b = Σ_j w_j mean_j / Σ_j w_j over *past* batches j, w_j = (1 − d)·d^(age of j); 0 if none.
    w = [(1 - decay) * decay ** (len(means) - 1 - j) for j in range(len(means))]
    b = sum(wj * mj for wj, mj in zip(w, means)) / sum(w) if means else 0.0
    baseline, adv, state = moving_average_probe(scores, state, decay)
    assert_close(baseline, b, 1e-5 * 100.0)  # scores ≤ 100: 1e-5 relative to that scale
    assert_close(adv, f64(scores) - b, 1e-5 * 100.0)
    means.append(float(np.mean(f64(scores))))


# ----------------------------------------------------------------------------- kl.py


@jax.jit
def kl_probe(logp, ref, clamp):
  return {"log_ratio": pg.log_ratio(logp, ref, clamp),
          "k": [pg.kl_k1(logp, ref), pg.kl_k2(logp, ref), pg.kl_k3(logp, ref)],
          "estimate": [pg.kl_estimate(logp, ref, kind) for kind in ("k1", "k2", "k3")]}


@PROPERTY
@given(batch(2, bounds=(1.0, 30.0, 1e4)), st.sampled_from([1.0, 5.0, 20.0]))
@example(case=(np.ones((1, 3), np.float32), [np.array([[-500.0, 0.0, 500.0]], np.float32),
                                             np.array([[0.0, -1e4, 0.0]], np.float32)], 1e4),
         clamp=20.0)  # huge log-ratios: clamped to ±20, finite
def test_kl_estimators(case, clamp):
  _, (logp, ref), _ = case
  out = kl_probe(logp, ref, clamp)
  delta_raw = f64(logp) - f64(ref)
  delta = np.clip(delta_raw, -20.0, 20.0)
  # log π − log π_ref rounds once in float32: ε of |Δ|.
  d_tol = 2 * EPS32 * np.abs(delta_raw)
  assert_close(out["log_ratio"], np.clip(delta_raw, -clamp, clamp), d_tol)
  # k3 = expm1(−Δ) + Δ: a sum of two terms of size |expm1(−Δ)| and |Δ|, plus Δ's rounding
  # times dk3/dΔ = 1 − e^{−Δ}.
  k3_tol = (4 * EPS32 * (np.abs(np.expm1(-delta)) + np.abs(delta))
            + np.abs(np.expm1(-delta)) * d_tol)
  wants = [(delta, d_tol), (0.5 * delta ** 2, np.abs(delta) * d_tol),
           (np.expm1(-delta) + delta, k3_tol)]
  for got, got_by_name, (want, tol) in zip(out["k"], out["estimate"], wants):
    assert_close(got, want, tol)
    assert_close(got_by_name, want, tol)
  assert np.all(np.asarray(out["k"][1]) >= 0) and np.all(np.asarray(out["k"][2]) >= 0)


# ----------------------------------------------------------------------------- logprobs.py


@functools.partial(jax.jit, static_argnames="chunk")
def logprob_probe(logits, tokens, temperature, mask, w, u, *, chunk):
  """Everything from pg.core.logprobs, dense (chunk_size=None) and chunked (chunk_size=chunk)."""
  out = {}
  for path, c in (("dense", None), ("chunked", chunk)):
    logp, ent = pg.token_log_probs_and_entropy(logits, tokens, temperature=temperature,
                                               chunk_size=c)

    def objective(x, c=c):
      lp, h = pg.token_log_probs_and_entropy(x, tokens, temperature=temperature, chunk_size=c)
      return jnp.sum(w * lp) + jnp.sum(u * h)

    out[path] = {
        "logp": logp, "entropy": ent,
        "logp_only": pg.token_log_probs(logits, tokens, temperature=temperature, chunk_size=c),
        "entropy_only": pg.token_entropy(logits, temperature=temperature, chunk_size=c),
        "seq": pg.sequence_log_probs(logp, mask),
        # float32 logits only (the gradient test); bf16 gradients round to 3 digits.
        "grad": jax.grad(objective)(logits) if logits.dtype == jnp.float32 else None}
  return out


def log_softmax_reference(x_BxTxV, temperature):
  x = f64(x_BxTxV) / temperature
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def chunk_sizes(V):
  """C for the chunked path (the dense one runs beside it): 2, 3, 4 of V = 5 or 7 leave a
  remainder after the scanned chunks, 1 does not, and C ≥ V falls back to the dense path."""
  return st.sampled_from([3, 2, 1, 4, V])


@st.composite
def logits_case(draw, dtypes=(np.float32, jnp.bfloat16)):
  B, T, V = draw(st.sampled_from(SHAPES_BTV))
  bound = draw(st.sampled_from([1.0, 10.0, 1e3]))
  dtype = draw(st.sampled_from(dtypes))
  logits = draw(hnp.arrays(np.float32, (B, T, V), elements=floats(bound))).astype(dtype)
  tokens = draw(hnp.arrays(np.int32, (B, T), elements=st.integers(0, V - 1)))
  chunk = draw(chunk_sizes(V))
  temperature = draw(st.sampled_from([1.0, 0.25, 0.7, 3.0]))
  mask = draw(masks(B, T))
  w = draw(hnp.arrays(np.float32, (B, T), elements=floats(2.0)))
  u = draw(hnp.arrays(np.float32, (B, T), elements=floats(2.0)))
  return logits, tokens, chunk, temperature, mask, w, u


def logit_scale(logits, temperature):
  """Errors in float32 log-sum-exp scale with max|x/τ| (the dominant logit), at least 1."""
  return max(1.0, float(np.max(np.abs(np.asarray(logits, np.float32)))) / temperature)


@PROPERTY_FEW
@given(logits_case())
def test_token_log_probs_and_entropy(case):
  logits, tokens, chunk, temperature, mask, w, u = case
  out = logprob_probe(logits, tokens, temperature, mask, w, u, chunk=chunk)
  logp_all = log_softmax_reference(np.asarray(logits, np.float32), temperature)
  want_logp = np.take_along_axis(logp_all, tokens[..., None], axis=-1)[..., 0]
  want_ent = -np.sum(np.exp(logp_all) * logp_all, axis=-1)
  # Entropy = lse − Σp·x: two numbers of size max|x/τ| whose difference is ≤ log V.
  atol = 16 * EPS32 * logit_scale(logits, temperature)
  T = tokens.shape[1]
  for path in ("dense", "chunked"):
    got = out[path]
    for name in ("logp", "entropy", "logp_only", "entropy_only"):
      assert np.asarray(got[name]).dtype == np.float32
    assert_close(got["logp"], want_logp, atol)
    assert_close(got["logp_only"], want_logp, atol)
    assert_close(got["entropy"], want_ent, atol)
    assert_close(got["entropy_only"], want_ent, atol)
    assert_close(got["seq"], np.sum(want_logp * mask, axis=-1),
                 T * atol + 2 * T * EPS32 * np.sum(np.abs(want_logp), axis=-1))


@PROPERTY_FEW
@given(logits_case(dtypes=(np.float32,)))
def test_token_log_prob_gradients(case):
  """The chunked path's hand-written backward pass, and the dense one, against the analytic
  gradient ∂(Σ w·logp + Σ u·H)/∂x_v = [w(1[v = y] − p_v) − u·p_v(log p_v + H)] / τ."""
  logits, tokens, chunk, temperature, mask, w, u = case
  out = logprob_probe(logits, tokens, temperature, mask, w, u, chunk=chunk)
  logp_all = log_softmax_reference(logits, temperature)
  p = np.exp(logp_all)
  H = -np.sum(p * logp_all, axis=-1, keepdims=True)
  onehot = np.eye(logits.shape[-1])[tokens]
  want = (f64(w)[..., None] * (onehot - p)
          - f64(u)[..., None] * p * (logp_all + H)) / temperature
  # p·(log p + H): log p and H carry an absolute error of ~ε·max|x/τ|, times |u|·p ≤ 2.
  atol = 64 * EPS32 * logit_scale(logits, temperature) / temperature
  assert_close(out["dense"]["grad"], want, atol)
  assert_close(out["chunked"]["grad"], want, atol)


@functools.partial(jax.jit, static_argnames="chunk")
def head_probe(h, kernel, bias, tokens, temperature, *, chunk):
  return [pg.head_log_probs_and_entropy(h, kernel, bias, tokens, temperature=temperature,
                                        chunk_size=c) for c in (None, chunk)]


@PROPERTY_FEW
@given(st.sampled_from(((2, 3, 4, 7), (1, 1, 1, 2), (3, 2, 2, 5))), st.data())
def test_head_log_probs_and_entropy(shape, data):
  B, T, D, V = shape
  h = data.draw(hnp.arrays(np.float32, (B, T, D), elements=floats(3.0)))
  kernel = data.draw(hnp.arrays(np.float32, (D, V), elements=floats(3.0)))
  bias = data.draw(hnp.arrays(np.float32, (V,), elements=floats(3.0)))
  tokens = data.draw(hnp.arrays(np.int32, (B, T), elements=st.integers(0, V - 1)))
  chunk = data.draw(chunk_sizes(V))
  temperature = data.draw(st.sampled_from([1.0, 0.5, 2.0]))
  x = np.einsum("btd,dv->btv", f64(h), f64(kernel)) + f64(bias)
  logp_all = log_softmax_reference(x, temperature)
  want_logp = np.take_along_axis(logp_all, tokens[..., None], axis=-1)[..., 0]
  want_ent = -np.sum(np.exp(logp_all) * logp_all, axis=-1)
  # The float32 matmul is exact to D·ε·Σ|h||W| per logit.
  mat = np.einsum("btd,dv->btv", np.abs(f64(h)), np.abs(f64(kernel))) + np.abs(f64(bias))
  atol = 16 * (D + 1) * EPS32 * max(1.0, float(mat.max())) / temperature
  for logp, ent in head_probe(h, kernel, bias, tokens, temperature, chunk=chunk):  # dense, chunked
    assert_close(logp, want_logp, atol)
    assert_close(ent, want_ent, atol)


# ----------------------------------------------------------------------------- policy_losses.py


@jax.jit
def ppo_probe(logp, old, adv, m, eps_low, eps_high, dual):
  def total(logp, old, adv):
    return jnp.sum(pg.ppo_clipped_surrogate(logp, old, adv, m, eps_low, eps_high, dual)[0])

  loss, clipped = pg.ppo_clipped_surrogate(logp, old, adv, m, eps_low, eps_high, dual)
  return loss, clipped, jax.grad(total, argnums=(0, 1, 2))(logp, old, adv)


@st.composite
def ppo_case(draw):
  m, (logp, old, adv), _ = draw(batch(3, bounds=(1.0, 30.0, 1e3)))
  adv = adv / np.float32(10.0)  # advantages up to 100, log-probs up to 1e3
  eps_low = draw(st.floats(0.0, 0.99))
  eps_high = draw(st.floats(0.0, 5.0))
  dual = draw(st.one_of(st.sampled_from([0.0, 1.0, 1.5, 3.0]), st.floats(0.0, 10.0)))
  return m, logp, old, adv, eps_low, eps_high, dual


def ppo_reference(m, logp, old, adv, eps_low, eps_high, dual):
  """Per token: loss, clipped flag, d loss / d log π (float64), and `sure`: False within
  rounding of a branch switch (ρ at a clip edge, Δ at the ±20 clamp, the loss at the dual
  bound), where the flag and the gradient may go either way."""
  B, T = m.shape
  out = {k: np.zeros((B, T)) for k in ("loss", "clipped", "grad")}
  sure = np.ones((B, T), bool)
  for b in range(B):
    for t in range(T):
      a = float(adv[b, t])
      d = float(logp[b, t]) - float(old[b, t])
      rho = math.exp(min(max(d, -20.0), 20.0))
      unclipped = -a * rho
      clipped = -a * min(max(rho, 1.0 - eps_low), 1.0 + eps_high)
      loss, took_clip = max(unclipped, clipped), clipped > unclipped
      grad = 0.0 if (took_clip or abs(d) > 20.0) else -a * rho
      # Δ rounds in float32 to ε·max(|log π|, |log π_old|), an absolute error in log ρ.
      rel = 8 * EPS32 * (1.0 + max(abs(float(logp[b, t])), abs(float(old[b, t]))))
      near = (min(abs(rho - (1.0 - eps_low)), abs(rho - (1.0 + eps_high))) <= rel * rho
              or abs(abs(d) - 20.0) <= rel
              or (dual > 1.0 and a < 0 and abs(loss + dual * a) <= rel * abs(loss)))
      took_dual = dual > 1.0 and a < 0 and loss > -dual * a
      if took_dual:
        loss, grad = -dual * a, 0.0
      sure[b, t] = not near
      out["loss"][b, t] = loss * float(m[b, t])
      out["clipped"][b, t] = float(took_clip or took_dual) * float(m[b, t])
      out["grad"][b, t] = grad * float(m[b, t])
  return out, sure


@PROPERTY
@given(ppo_case())
@example(case=(np.ones((1, 3), np.float32), np.array([[500.0, -500.0, 0.0]], np.float32),
               np.zeros((1, 3), np.float32), np.array([[1.0, -1.0, 2.0]], np.float32),
               0.2, 0.2, 3.0))  # huge log-ratios: clamped, finite
@example(case=(np.array([[1, 1, 1, 1, 1, 0]], np.float32),
               np.array([[3.0, 0.5, -0.5, 0.1, 0.5, 3.0]], np.float32),
               np.zeros((1, 6), np.float32),
               np.array([[-1.0, -1.0, -1.0, 1.0, 1.0, -1.0]], np.float32),
               0.2, 0.3, 3.0))  # ρ = e³ > c = 3 with A < 0: the dual clip (and each branch)
def test_ppo_clipped_surrogate(case):
  m, logp, old, adv, eps_low, eps_high, dual = case
  want, sure = ppo_reference(m, logp, old, adv, eps_low, eps_high, dual)
  loss, clipped, (g_logp, g_old, g_adv) = ppo_probe(logp, old, adv, m, eps_low, eps_high, dual)
  # ρ = exp(Δ), with Δ rounded to ε·max(|log π|, |log π_old|) in float32: a relative error of
  # that size in ρ (1e-4 at |log π| = 1e3). Flags and gradients only away from branch switches.
  scale = np.maximum(np.abs(f64(logp)), np.abs(f64(old))) + 1.0
  atol = 8 * EPS32 * scale * np.abs(want["loss"])
  assert_close(loss, want["loss"], atol)
  np.testing.assert_array_equal(np.asarray(clipped)[sure], want["clipped"][sure])
  assert_close(np.asarray(g_logp)[sure], want["grad"][sure], atol[sure])
  # Behaviour log-probs and advantages are constants (stop-gradient).
  assert not np.any(np.asarray(g_old)) and not np.any(np.asarray(g_adv))


@jax.jit
def reinforce_probe(logp, adv, m):
  def token_total(logp, adv):
    return jnp.sum(pg.reinforce_token_surrogate(logp, adv, m))

  def seq_total(seq_logp, seq_adv):
    return jnp.sum(pg.reinforce_sequence_surrogate(seq_logp, seq_adv))

  seq_logp, seq_adv = logp[:, 0], adv[:, 0]
  return {"token": pg.reinforce_token_surrogate(logp, adv, m),
          "token_grads": jax.grad(token_total, argnums=(0, 1))(logp, adv),
          "seq": pg.reinforce_sequence_surrogate(seq_logp, seq_adv),
          "seq_grads": jax.grad(seq_total, argnums=(0, 1))(seq_logp, seq_adv)}


@PROPERTY
@given(batch(2, bounds=(1.0, 1e3)))
def test_reinforce_surrogates(case):
  m, (logp, adv), _ = case
  out = reinforce_probe(logp, adv, m)
  want = -f64(adv) * f64(logp) * m
  assert_close(out["token"], want, 2 * EPS32 * np.abs(want))
  assert_close(out["token_grads"][0], -f64(adv) * m, 0.0)
  assert not np.any(np.asarray(out["token_grads"][1]))  # A is a constant
  seq_want = -f64(adv[:, 0]) * f64(logp[:, 0])
  assert_close(out["seq"], seq_want, 2 * EPS32 * np.abs(seq_want))
  assert_close(out["seq_grads"][0], -f64(adv[:, 0]), 0.0)
  assert not np.any(np.asarray(out["seq_grads"][1]))


@jax.jit
def value_probe(v, v_old, ret, ent, m, clip):
  return pg.clipped_value_loss(v, v_old, ret, m, clip), pg.entropy_bonus(ent, m)


@PROPERTY
@given(batch(4, bounds=(1.0, 100.0)), st.floats(0.01, 5.0))
def test_clipped_value_loss_and_entropy_bonus(case, clip):
  m, (v, v_old, ret, ent), _ = case
  value_loss, bonus = value_probe(v, v_old, ret, ent, m, clip)
  vc = f64(v_old) + np.clip(f64(v) - f64(v_old), -clip, clip)
  want = 0.5 * np.maximum((f64(v) - f64(ret)) ** 2, (vc - f64(ret)) ** 2) * m
  scale = np.abs(f64(v)) + np.abs(f64(v_old)) + np.abs(f64(ret)) + clip
  assert_close(value_loss, want, 8 * EPS32 * scale ** 2)
  assert_close(bonus, -f64(ent) * m, 0.0)


# ----------------------------------------------------------------------------- aggregation.py


@jax.jit
def aggregation_probe(loss, m, normaliser):
  out = {mode: pg.aggregate_loss(loss, m, mode) for mode in pg.AGGREGATION_MODES}
  out["norm"] = pg.aggregate_loss(loss, m, "seq-mean-token-sum-norm", normaliser)
  return out


@PROPERTY
@given(batch(1), st.floats(0.5, 100.0))
@example(case=(np.zeros((3, 5), np.float32), [np.ones((3, 5), np.float32)], 1.0),
         normaliser=2.0)  # nothing generated: 0, not NaN
def test_aggregate_loss(case, normaliser):
  m, (loss,), _ = case
  B, T = m.shape
  out = aggregation_probe(loss, m, normaliser)
  rows = [[float(loss[b, t]) for t in range(T) if m[b, t] > 0] for b in range(B)]
  n_all = sum(len(r) for r in rows)
  total = sum(sum(r) for r in rows)
  want = {"token-mean": total / n_all if n_all else 0.0,
          "seq-mean-token-mean": sum(sum(r) / len(r) if r else 0.0 for r in rows) / B,
          "seq-mean-token-sum": total / B,
          "seq-mean-token-sum-norm": total / B / T,  # the default normaliser is T
          "norm": total / B / normaliser}
  # Every mode is a weighted sum of the ℓ with weights ≤ 2 (≤ 1/0.5 for the normaliser 0.5),
  # so it is exact to 2·n·ε·Σ|ℓ m| with n = B·T ≤ 48 terms.
  atol = 8 * B * T * EPS32 * float(np.sum(np.abs(f64(loss)) * m))
  assert set(out) == set(want)
  for mode, value in want.items():
    assert_close(out[mode], value, atol)
