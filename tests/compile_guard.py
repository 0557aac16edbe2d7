"""`no_compiles()`: a context manager that fails if XLA lowers or compiles anything inside it
(the check behind "fails before compiling" in the contract and bad-input tests)."""

import contextlib

import jax


@contextlib.contextmanager
def no_compiles():
  events = []

  def listener(name, duration, **kwargs):
    del duration, kwargs
    if name.startswith("/jax/core/compile/") and name != "/jax/core/compile/jaxpr_trace_duration":
      events.append(name)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield events
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert not events, f"compiled before raising: {events}"
