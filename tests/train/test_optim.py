"""The optimizer is optax's AdamW after global-norm clipping, with learning rate and weight decay
read from the traced hyperparameters: the update matches the AdamW formula, and a changed
value never recompiles."""

import jax
import jax.numpy as jnp
import numpy as np

import pg
from pg.train.optim import optimizer


def adamw_reference(grads, params, lr, wd, max_norm, steps, b1=0.9, b2=0.999, eps=1e-8):
  """NumPy AdamW with decoupled decay: u = clip(g); m, v moments; p ← p − lr (m̂/(√v̂+ε) + wd p)."""
  p = np.asarray(params, np.float64)
  m = np.zeros_like(p)
  v = np.zeros_like(p)
  for t in range(1, steps + 1):
    g = np.asarray(grads, np.float64)
    g = g * min(1.0, max_norm / np.linalg.norm(g))
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    p = p - lr * (m_hat / (np.sqrt(v_hat) + eps) + wd * p)
  return p


def run(params, grads, hp, max_norm, steps):
  tx = optimizer(hp, max_norm)
  state = tx.init(params)
  for _ in range(steps):
    updates, state = tx.update(grads, state, params)
    params = params + updates
  return params


def test_the_update_is_adamw_with_clipping():
  params = jnp.array([1.0, -2.0, 0.5])
  grads = jnp.array([3.0, -4.0, 0.0])  # norm 5: clipped to 1
  hp = pg.make_hparams(learning_rate=0.1, weight_decay=0.01)
  got = jax.jit(lambda p, g, hp: run(p, g, hp, 1.0, 3))(params, grads, hp)
  np.testing.assert_allclose(got, adamw_reference(grads, params, 0.1, 0.01, 1.0, 3),
                             rtol=1e-5)


def test_rates_are_traced_values():
  step = jax.jit(lambda p, g, hp: run(p, g, hp, 1.0, 1))
  params, zero = jnp.ones(2), jnp.zeros(2)
  a = step(params, zero, pg.make_hparams(learning_rate=0.1, weight_decay=0.0))
  b = step(params, zero, pg.make_hparams(learning_rate=0.1, weight_decay=0.5))
  c = step(params, zero, pg.make_hparams(learning_rate=0.2, weight_decay=0.5))
  assert step._cache_size() == 1
  np.testing.assert_allclose(a, [1.0, 1.0])           # no gradient, no decay
  np.testing.assert_allclose(b, [0.95, 0.95], rtol=1e-6)  # p − lr·wd·p
  np.testing.assert_allclose(c, [0.9, 0.9], rtol=1e-6)
