"""The optimizer: optax's own AdamW after global-norm clipping, its rates traced.

The learning rate and weight decay are read from the run's swept hyperparameters `hp` (float32
leaves of the train state), so the transformation is built inside the compiled step from traced
values: a changed value never recompiles, and the optimizer state holds only Adam's moments.

    u = clip(g, max_grad_norm);  m, v = Adam moments of u;  Δθ = −η (m̂ / (√v̂ + ε) + λ θ)
"""

from __future__ import annotations

import optax


def optimizer(hp, max_grad_norm: float) -> optax.GradientTransformation:
  """clip_by_global_norm(max_grad_norm) → optax.adamw(hp["learning_rate"], hp["weight_decay"])."""
  return optax.chain(optax.clip_by_global_norm(max_grad_norm),
                     optax.adamw(hp["learning_rate"], weight_decay=hp["weight_decay"]))
