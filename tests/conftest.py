"""Test-session setup: XLA's persistent compilation cache, so the many tiny programs that differ
only in traced values (one run per setting, resumed runs) compile once per session; and on a
GPU, deterministic kernels for the tests that want reruns and resumed runs bit-identical (XLA's
GPU scatter-adds use atomics otherwise: those tests failed on an H200 without it). The flag is
read when JAX's backend starts, so it is set before anything runs; the CPU ignores it."""

import os
import tempfile

os.environ["XLA_FLAGS"] = " ".join(
    f for f in (os.environ.get("XLA_FLAGS", ""), "--xla_gpu_deterministic_ops=true") if f)

import jax  # noqa: E402

_CACHE = tempfile.mkdtemp(prefix="pg-tests-xla-cache-")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_addoption(parser):
  parser.addoption("--runslow", action="store_true",
                   help="also run the tests marked slow (CI=true does this too)")


def pytest_collection_modifyitems(config, items):
  """`pytest` alone runs the default suite; tests marked slow run in CI (CI=true), with
  --runslow, or when a -m expression is given (e.g. -m slow)."""
  import os

  import pytest
  if config.getoption("--runslow") or os.environ.get("CI") or config.option.markexpr:
    return
  skip = pytest.mark.skip(reason="slow: runs in CI (CI=true), with --runslow or -m slow")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)
