"""LoRA: low-rank adapters on chosen projections, in a variable collection of their own.

For a projection y = x W, W `[D_in, D_out]`, whose parameter path matches `config.lora.targets`
(a regex over paths like "params/trunk/layer_0/q/kernel"), the layer computes

    y = x W + (α / r) · (x A) B,    A `[D_in, r]` ~ U(±1/√D_in),  B `[r, D_out]` = 0

(Hu et al. 2021; PEFT's initialisation), so training starts at the base model and the change
of W, (α / r) A B, has rank ≤ r. The adapters are a "lora" collection beside "params", nested
like it:

    {"params": base, "lora": {"trunk": {"layer_0": {"q": {"a": A, "b": B}}}}}

and a policy with `lora_alpha` set applies them by intercepting each `nn.Dense` call whose scope
holds them (flax's `nn.intercept_methods`). The base is never copied into the adapters' tree:
in the train step it is one unbatched copy shared by every run while the adapters carry the run
axis, and the base alone (no "lora" collection) is the reference policy.

Why not a library: `qwix` (Google's, on PyPI) adds LoRA to linen models by intercepting
`dot_general` in listed methods and stores the adapters inside the "params" collection beside
the weights they adapt; keeping them in a tree of their own is what lets one base serve R runs,
and the interception is these few lines.
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pg.policy.partition import leaf_name

LORA = "lora"
# Projections LoRA may adapt: 2-D Dense kernels, less the heads the policy reads directly
# (the chunked LM head multiplies by lm_head's kernel itself; value heads train whole).
NOT_ADAPTED = ("lm_head", "value_out")


def projections(params) -> dict:
  """path -> (module path tuple, shape) of every adaptable kernel in `params`."""
  out = {}
  for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = leaf_name(path)
    keys = name.split("/")
    if keys[-1] == "kernel" and len(x.shape) == 2 and not set(keys) & set(NOT_ADAPTED):
      out[name] = (tuple(keys[1:-1]), tuple(x.shape))
  return out


def targets(params, pattern: str, rank: int) -> dict:
  """The projections `pattern` selects, checked: at least one, each with room for `rank`."""
  found = projections(params)
  chosen = {k: v for k, v in found.items() if re.search(pattern, k)}
  if not chosen:
    names = ", ".join(list(found)[:8]) + (", ..." if len(found) > 8 else "")
    raise ValueError(f"config.lora.targets {pattern!r} matches no projection of this model; "
                     f"its projections: {names}.")
  for name, (_, shape) in chosen.items():
    if rank > min(shape):
      raise ValueError(f"config.lora.rank ({rank}) is larger than the matrix {name} "
                       f"{shape} (rank at most {min(shape)}).")
  return chosen


def init_adapters(key, params, pattern: str, rank: int) -> dict:
  """{"lora": ...}: A uniform in ±1/√D_in and B zero for each targeted projection."""
  tree = {}
  for i, (name, (module_path, (d_in, d_out))) in enumerate(
      sorted(targets(params, pattern, rank).items())):
    bound = 1.0 / np.sqrt(d_in)
    a = jax.random.uniform(jax.random.fold_in(key, i), (d_in, rank), jnp.float32, -bound, bound)
    node = tree
    for k in module_path:
      node = node.setdefault(k, {})
    node["a"], node["b"] = a, jnp.zeros((rank, d_out), jnp.float32)
  return {LORA: tree}


def interceptor(alpha: float):
  """A flax method interceptor adding (α / r) (x A) B to each adapted Dense's output."""
  def intercept(next_fun, args, kwargs, context):
    module = context.module
    y = next_fun(*args, **kwargs)
    if (context.method_name != "__call__" or not isinstance(module, nn.Dense)
        or not module.has_variable(LORA, "a")):
      return y
    a, b = module.get_variable(LORA, "a"), module.get_variable(LORA, "b")
    dtype = module.dtype or jnp.float32
    delta = (args[0].astype(dtype) @ a.astype(dtype)) @ b.astype(dtype)
    return y + ((alpha / a.shape[-1]) * delta).astype(y.dtype)
  return intercept


def apply(module, variables, *args, method, alpha):
  """`module.apply(variables, ...)`, with the adapters in `variables[LORA]` applied."""
  if LORA not in variables:
    return module.apply(variables, *args, method=method)
  with nn.intercept_methods(interceptor(alpha)):
    return module.apply(variables, *args, method=method)


def combine(base, adapters):
  """The variables a policy runs: the base's "params" with the adapters' "lora"."""
  return {**base, **adapters}


def adapted(variables):
  """(module path tuple, A, B) for every adapter in `variables`' "lora" collection."""
  def walk(prefix, node):
    for k, v in node.items():
      if "a" in v and "b" in v and not isinstance(v["a"], dict):
        yield prefix + (k,), v["a"], v["b"]
      else:
        yield from walk(prefix + (k,), v)
  return list(walk((), variables.get(LORA, {})))


def merge(variables, alpha: float):
  """Plain params (no "lora" collection): each adapted kernel W + (α / r) A B. What a merged
  export writes; its logits equal those of the base with the adapters."""
  params = jax.tree_util.tree_map(lambda x: x, variables["params"])  # a copy of the dicts
  for path, a, b in adapted(variables):
    *outer, last = path
    node = params
    for k in outer:
      node = node[k]
    w = node[last]["kernel"]
    node[last] = {**node[last], "kernel": (w + (alpha / a.shape[-1]) * (a @ b)).astype(w.dtype)}
  return {"params": params}


def delta(variables, alpha: float) -> dict:
  """path -> the change (α / r) A B each adapter makes to its kernel (for rank checks)."""
  return {"/".join(("params",) + path + ("kernel",)): (alpha / a.shape[-1]) * (a @ b)
          for path, a, b in adapted(variables)}
