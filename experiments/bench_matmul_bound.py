"""How fast one update could be if only its matmuls took time: each timed alone, at its shape.

    python experiments/bench_matmul_bound.py [--config configs/bench_reference.py]

About 20 seconds on a 2-core CPU. The trainer's dense layers (QKV, attention output, MLP in and
out, every layer, and the LM head) over the rows it trains on: forward, input gradient and
weight gradient separately; and the sampler's decode steps, T matmuls of B rows each. Each
product is jitted and timed alone (best of 30) on this device. The sum is a lower bound on the
update's time: attention, norms, softmaxes, sampling itself and the optimizer count as free.
Compare it with bench_train's seconds per update to see what share goes to the rest.
"""

import argparse
import os

import jax

from pg import train
from pg.configs import load_config_file
from pg.timing import best_time
from pg.tasks import make_task


_PRODUCTS = {  # (m, k, n): the forward is [m, k] @ [k, n]; each pass as the backward does it
    "forward": (lambda m, k, n: ((m, k), (k, n)), lambda a, b: a @ b),
    "input gradient": (lambda m, k, n: ((m, n), (k, n)), lambda dy, w: dy @ w.T),
    "weight gradient": (lambda m, k, n: ((m, k), (m, n)), lambda x, dy: x.T @ dy),
}


def time_product(m, k, n, kind):
  """Seconds and FLOPs of one [m, k] × [k, n] product in the given pass, timed alone."""
  shapes, fn = _PRODUCTS[kind]
  key = jax.random.PRNGKey(0)
  a, b = (jax.random.normal(key, s) for s in shapes(m, k, n))
  return best_time(jax.jit(fn), a, b, repeats=30), 2 * m * k * n


def layer_shapes(d, mlp_ratio):
  return [(d, 3 * d), (d, d), (d, mlp_ratio * d), (mlp_ratio * d, d)]


def bound(config):
  """Rows of (part, seconds, FLOPs) for one update of one seed."""
  task = make_task(config.task.name, **config.task.options)
  m = config.model
  N, G = config.num_prompts, config.group_size
  B, P, T = N * G, task.prompt_len, task.max_new_tokens
  rows_trained = N * P + B * (T - 1) if train.shares_prompts(config) else B * (P + T)
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


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..",
                                                       "configs", "bench_reference.py"))
  args = parser.parse_args()
  config = load_config_file(args.config)
  task = make_task(config.task.name, **config.task.options)
  rows = bound(config)
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPU cores\n")
  print("| matmuls of | ms alone | GFLOP | GFLOP/s |")
  print("|---|---|---|---|")
  for name, s, f in rows:
    print(f"| {name} | {1e3 * s:.1f} | {f / 1e9:.2f} | {f / s / 1e9:.0f} |")
  seconds = sum(s for _, s, _ in rows)
  tokens = config.num_prompts * config.group_size * task.max_new_tokens
  print(f"\nAll of them: {1e3 * seconds:.1f} ms per update, so at most {tokens / seconds:,.0f} "
        f"generated tokens/s with everything else free.")


if __name__ == "__main__":
  main()
