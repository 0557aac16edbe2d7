"""How fast one update could be if only its matmuls took time: each timed alone, at its shape.

The trainer's dense layers (QKV, attention output, MLP in and out, every layer, and the LM head)
over the rows it trains on: forward, input gradient and weight gradient separately; and the
sampler's decode steps, T matmuls of B rows each. Each product is jitted and timed alone (best
of 30) on this device. The sum is a lower bound on the update's time: attention, norms,
softmaxes, sampling itself and the optimizer count as free. Shapes are the GPT policy's.
"""

from __future__ import annotations

import jax

from pg import train
from pg.bench.timing import best_time
from pg.run.tables import markdown_table

_PRODUCTS = {  # (m, k, n): the forward is [m, k] @ [k, n]; each pass as the backward does it
    "forward": (lambda m, k, n: ((m, k), (k, n)), lambda a, b: a @ b),
    "input gradient": (lambda m, k, n: ((m, n), (k, n)), lambda dy, w: dy @ w.T),
    "weight gradient": (lambda m, k, n: ((m, k), (m, n)), lambda x, dy: x.T @ dy),
}


def time_product(m: int, k: int, n: int, kind: str):
  """Seconds and FLOPs of one [m, k] × [k, n] product in the given pass, timed alone."""
  shapes, fn = _PRODUCTS[kind]
  key = jax.random.PRNGKey(0)
  a, b = (jax.random.normal(key, s) for s in shapes(m, k, n))
  return best_time(jax.jit(fn), a, b, repeats=30), 2 * m * k * n


def layer_shapes(d: int, mlp_ratio: int):
  """(k, n) of each dense layer of a transformer block: QKV, attention output, MLP in and out."""
  return [(d, 3 * d), (d, d), (d, mlp_ratio * d), (mlp_ratio * d, d)]


def bound(config, task, policy):
  """Rows of (part, seconds, FLOPs) for one update of one seed (`task, policy` built from
  `config` by `pg.train.build`)."""
  m = config.model
  N, G = config.num_prompts, config.group_size
  B, P, T = N * G, task.prompt_len, task.max_new_tokens
  rows_trained = N * P + B * (T - 1) if train.shares_prompts(config, policy) else B * (P + T)
  dense = layer_shapes(m.d_model, m.mlp_ratio)
  rows = []
  for kind in _PRODUCTS:
    seconds = flops = 0.0
    for k, n in dense:
      s, f = time_product(rows_trained, k, n, kind)
      seconds, flops = seconds + m.num_layers * s, flops + m.num_layers * f
    s, f = time_product(B * T, m.d_model, task.vocab_size, kind)  # the LM head
    rows.append((f"trainer {kind}", seconds + s, flops + f))
  seconds = flops = 0.0
  for k, n in dense + [(m.d_model, task.vocab_size)]:
    s, f = time_product(B, k, n, "forward")
    layers = 1 if n == task.vocab_size else m.num_layers
    seconds, flops = seconds + T * layers * s, flops + T * layers * f
  rows.append((f"sampling: {T} decode steps", seconds, flops))
  return rows


def report(config):
  """Prints `bound`'s rows as a table and the generated tokens/s they allow at most."""
  task, policy = train.build(config)
  rows = bound(config, task, policy)
  print(markdown_table(["matmuls of", "ms alone", "GFLOP", "GFLOP/s"],
                       [[name, f"{1e3 * s:.1f}", f"{f / 1e9:.2f}", f"{f / s / 1e9:.0f}"]
                        for name, s, f in rows]))
  seconds = sum(s for _, s, _ in rows)
  tokens = config.num_prompts * config.group_size * task.max_new_tokens
  print(f"\nAll of them: {1e3 * seconds:.1f} ms per update, so at most {tokens / seconds:,.0f} "
        f"generated tokens/s with everything else free.")
