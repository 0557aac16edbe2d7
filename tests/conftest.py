"""Test-session setup: XLA's persistent compilation cache, so the many tiny programs that differ
only in traced values (one run per setting, resumed runs) compile once per session."""

import tempfile

import jax

_CACHE = tempfile.mkdtemp(prefix="pg-tests-xla-cache-")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
