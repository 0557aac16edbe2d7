"""The core functions' benchmarks (`experiments/bench_core.py`): GAE, and log-probs with entropy.

`gae_table`: the `lax.scan` and associative-scan GAE against a vectorised NumPy loop, each
checked against that loop before it is timed. `logprobs_table`: `token_log_probs_and_entropy`
dense and chunked over the vocabulary, per logits dtype, forward and forward+backward, with the
compiled program's memory. Each time is a median of calls after one warm-up, each call waited
for; compiling is timed apart.
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from pg.bench.timing import call_times, timed
from pg.core.logprobs import token_log_probs_and_entropy
from pg.core.multistep import (generalized_advantage_estimation,
                               generalized_advantage_estimation_associative)
from pg.run.tables import markdown_table

MIB = 2.0 ** 20


def compile_jit(fn, args):
  """(compiled executable, seconds spent lowering and compiling) of `jax.jit(fn)` at `args`."""
  return timed(lambda: jax.jit(fn).lower(*args).compile())


def median_ms(fn, args, repeats, warmup=1):
  """(median wall time in ms over `repeats` calls after `warmup` untimed ones, last output)."""
  seconds, out = call_times(fn, *args, repeats=repeats, warmup=warmup)
  return 1e3 * statistics.median(seconds), out


def memory_mib(compiled):
  """{name: MiB} from `Compiled.memory_analysis()`, for the attributes this jax version has."""
  stats = compiled.memory_analysis()
  names = {"temp": "temp_size_in_bytes", "args": "argument_size_in_bytes",
           "out": "output_size_in_bytes", "alias": "alias_size_in_bytes",
           "peak": "peak_memory_in_bytes"}
  result = {}
  for short, attr in names.items():
    value = getattr(stats, attr, None) if stats is not None else None
    result[short] = None if value is None else value / MIB
  return result


def fmt(x, digits=1):
  return "n/a" if x is None else f"{x:.{digits}f}"


def max_rel_diff(a, b):
  """max over leaves of max |a − b| / max(|b|, 1e-30), in float32: an error relative to scale.

  Relative, so that a scalar loss summed over B·T tokens and a gradient of size ~1 compare alike.
  """
  def leaf(x, y):
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    return float(jnp.max(jnp.abs(x - y)) / jnp.maximum(jnp.max(jnp.abs(y)), 1e-30))
  return max(jax.tree.leaves(jax.tree.map(leaf, a, b)))


# --------------------------------------------------------------------------------------------
# 1. GAE.


def make_gae_inputs(B, T, seed=0):
  """Random float32 rewards and values, and a mask with a random-length generated prefix."""
  rng = np.random.default_rng(seed)
  rewards_BxT = rng.standard_normal((B, T), dtype=np.float32)
  values_BxT = rng.standard_normal((B, T), dtype=np.float32)
  lengths_B = rng.integers(1, T + 1, size=B)
  mask_BxT = (np.arange(T)[None, :] < lengths_B[:, None]).astype(np.float32)
  return rewards_BxT, values_BxT, mask_BxT


def gae_numpy(rewards_BxT, values_BxT, mask_BxT, gamma, lam):
  """GAE(γ, λ) by a Python loop over t (right to left), vectorised over B.

  Same semantics as `pg.generalized_advantage_estimation`: at a masked t the running advantage
  and the next value carry through unchanged; V = 0 after the last generated token.
  """
  B, T = rewards_BxT.shape
  r_TxB = np.ascontiguousarray(rewards_BxT.T, dtype=np.float32)
  v_TxB = np.ascontiguousarray(values_BxT.T, dtype=np.float32)
  on_TxB = np.ascontiguousarray(mask_BxT.T > 0)
  g = np.float32(gamma)
  gl = np.float32(gamma) * np.float32(lam)
  next_v_B = np.zeros(B, np.float32)
  adv_B = np.zeros(B, np.float32)
  adv_TxB = np.empty((T, B), np.float32)
  for t in range(T - 1, -1, -1):
    on_B = on_TxB[t]
    delta_B = r_TxB[t] + g * next_v_B - v_TxB[t]
    adv_B = np.where(on_B, delta_B + gl * adv_B, adv_B)
    next_v_B = np.where(on_B, v_TxB[t], next_v_B)
    adv_TxB[t] = adv_B
  return adv_TxB.T * mask_BxT


def check_gae_agree(outputs, ref_BxT, rtol=1e-4):
  """Asserts every output matches the NumPy reference; returns {name: max |Δ|}."""
  atol = rtol * float(np.max(np.abs(ref_BxT)))
  errors = {}
  for name, adv_BxT in outputs.items():
    adv_BxT = np.asarray(adv_BxT)
    np.testing.assert_allclose(adv_BxT, ref_BxT, rtol=rtol, atol=atol,
                               err_msg=f"GAE {name} disagrees with the NumPy reference")
    errors[name] = float(np.max(np.abs(adv_BxT - ref_BxT)))
  return errors


def gae_table(B, Ts, repeats, gamma=0.99, lam=0.95) -> str:
  """The three GAE implementations timed at B × T for each T in `Ts`, as a markdown table."""
  jax_fns = {"lax.scan": generalized_advantage_estimation,
             "associative_scan": generalized_advantage_estimation_associative}
  rows = []
  for T in Ts:
    rewards_BxT, values_BxT, mask_BxT = make_gae_inputs(B, T, seed=T)
    args = (jnp.asarray(rewards_BxT), jnp.asarray(values_BxT), jnp.asarray(mask_BxT),
            jnp.float32(gamma), jnp.float32(lam))
    compiled, compile_s = {}, {}
    for name, fn in jax_fns.items():
      compiled[name], compile_s[name] = compile_jit(fn, args)

    ref_BxT = gae_numpy(rewards_BxT, values_BxT, mask_BxT, gamma, lam)
    errors = check_gae_agree({name: c(*args) for name, c in compiled.items()}, ref_BxT)

    for name, c in compiled.items():
      ms, _ = median_ms(c, args, repeats)
      rows.append([B, T, name, f"{ms:.2f}", f"{1e3 * compile_s[name]:.0f}",
                   f"{errors[name]:.1e}"])
    np_args = (rewards_BxT, values_BxT, mask_BxT, gamma, lam)
    ms, _ = median_ms(gae_numpy, np_args, max(1, repeats // 2), warmup=0)
    rows.append([B, T, "NumPy loop", f"{ms:.2f}", "-", "0 (ref)"])
  return markdown_table(
      ["B", "T", "impl", "median ms", "compile ms", "max abs diff vs NumPy"], rows)


# --------------------------------------------------------------------------------------------
# 2. Log-probs and entropy.


def make_logprob_inputs(B, T, V, dtype, seed=0):
  key_x, key_y = jax.random.split(jax.random.key(seed))
  logits_BxTxV = (3.0 * jax.random.normal(key_x, (B, T, V), jnp.float32)).astype(dtype)
  tokens_BxT = jax.random.randint(key_y, (B, T), 0, V, jnp.int32)
  return jax.block_until_ready((logits_BxTxV, tokens_BxT))


def logprob_fwd(chunk_size):
  def fwd(logits_BxTxV, tokens_BxT):
    return token_log_probs_and_entropy(logits_BxTxV, tokens_BxT, chunk_size=chunk_size)
  return fwd


def logprob_fwd_bwd(chunk_size):
  def loss(logits_BxTxV, tokens_BxT):
    logp_BxT, entropy_BxT = token_log_probs_and_entropy(
        logits_BxTxV, tokens_BxT, chunk_size=chunk_size)
    return jnp.sum(logp_BxT) + 0.01 * jnp.sum(entropy_BxT)
  return jax.value_and_grad(loss)


def logprobs_table(B, T, V, chunk_sizes, repeats) -> str:
  """Dense and chunked log-probs timed at [B, T, V], both dtypes and modes, as a markdown table."""
  rows = []
  for dtype in (jnp.bfloat16, jnp.float32):
    args = make_logprob_inputs(B, T, V, dtype)
    for mode, make_fn in (("fwd", logprob_fwd), ("fwd+bwd", logprob_fwd_bwd)):
      dense_out = None
      for chunk_size in (None, *chunk_sizes):
        compiled, compile_s = compile_jit(make_fn(chunk_size), args)
        mem = memory_mib(compiled)
        ms, out = median_ms(compiled, args, repeats)
        del compiled
        if chunk_size is None:
          dense_out, diff = out, "-"
        else:
          diff = f"{max_rel_diff(out, dense_out):.1e}"
        del out
        rows.append([jnp.dtype(dtype).name, mode,
                     "dense" if chunk_size is None else f"chunk {chunk_size}",
                     f"{ms:.0f}", f"{compile_s:.1f}", fmt(mem["temp"]), fmt(mem["args"]),
                     fmt(mem["out"]), fmt(mem["peak"]), diff])
      del dense_out
    del args
  return markdown_table(["logits dtype", "mode", "impl", "median ms", "compile s", "temp MiB",
                         "args MiB", "out MiB", "peak MiB", "max rel diff vs dense"], rows)


# --------------------------------------------------------------------------------------------
# The report.


def report(*, quick, repeats, lp_repeats, gae_B, gae_Ts, B, T, V, chunks, skip_gae=False,
           skip_logprobs=False):
  """Prints the machine, then the GAE table (B = gae_B, each T in gae_Ts) and the log-prob
  table ([B, T, V], each of `chunks`), unless skipped."""
  t_start = time.perf_counter()
  device = jax.devices()[0]
  print("# pg core benchmarks\n")
  print(f"- jax {jax.__version__}, numpy {np.__version__}, python {platform.python_version()}")
  print(f"- backend `{jax.default_backend()}`, device `{device}` ({device.device_kind}), "
        f"{len(jax.devices())} device(s)")
  print(f"- {os.cpu_count()} CPU core(s), load average {os.getloadavg()[0]:.2f} at start "
        f"(other processes on the machine skew the timings)")
  print(f"- quick={quick}, GAE repeats={repeats}, log-prob repeats={lp_repeats}")
  if not skip_gae:
    print(f"\n## GAE, B={gae_B}, γ=0.99, λ=0.95 "
          f"(median of {repeats} calls; NumPy: {max(1, repeats // 2)})\n")
    print(gae_table(gae_B, gae_Ts, repeats), flush=True)
  if not skip_logprobs:
    f32_mib = B * T * V * 4 / MIB
    print(f"\n## token_log_probs_and_entropy, B={B}, T={T}, V={V} "
          f"(median of {lp_repeats} calls)\n")
    print(f"A float32 [B, T, V] array is {f32_mib:.0f} MiB (bfloat16: {f32_mib / 2:.0f} MiB). "
          f"fwd+bwd = value_and_grad of Σ logp + 0.01·Σ H w.r.t. the logits.\n")
    print(logprobs_table(B, T, V, chunks, lp_repeats), flush=True)
    print("\nMemory from `jax.jit(f).lower(*args).compile().memory_analysis()`: temp = XLA "
          "temporaries (excludes arguments and outputs). \"max rel diff\" = max |x − x_dense| / "
          "max |x_dense| over outputs (logp, H; or loss, grad).")
    if jax.default_backend() == "cpu":
      print("On CPU `peak_memory_in_bytes` appears to count only arguments + outputs, not "
            "temporaries; read the temp column.")
  print(f"\nTotal wall time: {time.perf_counter() - t_start:.0f} s")
