"""LoRA adapters (`pg.policy.lora`): the adapted layer is W + (α/r) A B, its gradients are the
full fine-tune's restricted to that subspace, and a merged export loads back to the same
logits."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from pg.policy import build_policy, lora
from pg.policy.base import with_lora
from pg.policy.hf import checkpoint

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "hf")
ALPHA, RANK = 8.0, 3
ALL = r"layer_\d+/"


def tiny_policy(**options):
  model = ml_collections.ConfigDict({"name": "llama", "num_layers": 2, "d_model": 32,
                                     "num_heads": 4, "num_kv_heads": 2, "mlp_dim": 48, **options})
  return with_lora(build_policy(model, vocab_size=40, max_len=16), ALPHA)


def random_adapters(params, pattern=ALL, rank=RANK, seed=1):
  """Adapters with B ≠ 0 (a freshly initialised B is zero), so they change the model."""
  adapters = lora.init_adapters(jax.random.PRNGKey(seed), params, pattern, rank)
  return jax.tree_util.tree_map(
      lambda x: x + 0.2 * jax.random.normal(jax.random.PRNGKey(seed + 1), x.shape), adapters)


TOKENS = jax.random.randint(jax.random.PRNGKey(3), (2, 12), 0, 40)


def test_fresh_adapters_leave_the_model_unchanged_and_are_initialised_as_peft():
  policy = tiny_policy()
  base = policy.init(jax.random.PRNGKey(0))
  adapters = lora.init_adapters(jax.random.PRNGKey(1), base, ALL, RANK)
  got, _ = policy.sequence_outputs(lora.combine(base, adapters), TOKENS)
  want, _ = policy.sequence_outputs(base, TOKENS)
  np.testing.assert_array_equal(got, want)
  q = adapters["lora"]["trunk"]["layer_0"]["q"]
  assert q["a"].shape == (32, RANK) and q["b"].shape == (RANK, 32)
  assert float(jnp.max(jnp.abs(q["a"]))) <= 1 / np.sqrt(32) and float(jnp.std(q["a"])) > 0
  assert not np.any(np.asarray(q["b"]))
  down = adapters["lora"]["trunk"]["layer_1"]["down"]
  assert down["a"].shape == (48, RANK) and down["b"].shape == (RANK, 32)


def test_adapted_logits_equal_the_merged_kernels_w_plus_scaled_ab():
  policy = tiny_policy()
  base = policy.init(jax.random.PRNGKey(0))
  full = lora.combine(base, random_adapters(base))
  got, _ = policy.sequence_outputs(full, TOKENS)
  merged = lora.merge(full, ALPHA)
  # By hand for one kernel: W + (α/r) A B.
  ad = full["lora"]["trunk"]["layer_1"]["v"]
  w = base["params"]["trunk"]["layer_1"]["v"]["kernel"]
  np.testing.assert_allclose(merged["params"]["trunk"]["layer_1"]["v"]["kernel"],
                             w + ALPHA / RANK * ad["a"] @ ad["b"], rtol=1e-6, atol=1e-6)
  want, _ = policy.sequence_outputs(merged, TOKENS)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  base_logits, _ = policy.sequence_outputs(base, TOKENS)
  assert np.max(np.abs(np.asarray(got - base_logits))) > 1e-2  # the adapters do act


def test_only_the_targeted_projections_are_adapted():
  policy = tiny_policy()
  base = policy.init(jax.random.PRNGKey(0))
  adapters = lora.init_adapters(jax.random.PRNGKey(1), base, r"layer_1/(q|v)/", RANK)
  assert sorted(lora.delta(lora.combine(base, adapters), ALPHA)) == [
      "params/trunk/layer_1/q/kernel", "params/trunk/layer_1/v/kernel"]
  # The LM head (read directly by the chunked head) is never a target.
  untied = tiny_policy(tie_embeddings=False)
  names = lora.projections(untied.init(jax.random.PRNGKey(0)))
  assert names and not any("lm_head" in n for n in names)


def test_lora_gradients_are_the_full_gradient_projected_on_the_subspace():
  """With W' = W + s A B (s = α/r) and G = ∂L/∂W' (the full fine-tune's gradient there):
  ∂L/∂A = s G Bᵀ and ∂L/∂B = s Aᵀ G, for every adapted kernel."""
  policy = tiny_policy()
  base = policy.init(jax.random.PRNGKey(0))
  adapters = random_adapters(base)
  s = ALPHA / RANK

  def loss(logits):
    logp = jax.nn.log_softmax(logits[:, :-1])
    return -jnp.mean(jnp.take_along_axis(logp, TOKENS[:, 1:, None], -1))

  g_adapters = jax.grad(lambda a: loss(policy.sequence_outputs(lora.combine(base, a),
                                                               TOKENS)[0]))(adapters)
  g_full = jax.grad(lambda p: loss(policy.sequence_outputs(p, TOKENS)[0]))(
      lora.merge(lora.combine(base, adapters), ALPHA))
  checked = 0
  for layer in ("layer_0", "layer_1"):
    for name in ("q", "k", "v", "o", "gate", "up", "down"):
      a, b = (adapters["lora"]["trunk"][layer][name][x] for x in "ab")
      G = g_full["params"]["trunk"][layer][name]["kernel"]
      got = g_adapters["lora"]["trunk"][layer][name]
      np.testing.assert_allclose(got["a"], s * G @ b.T, rtol=1e-4, atol=1e-6)
      np.testing.assert_allclose(got["b"], s * a.T @ G, rtol=1e-4, atol=1e-6)
      checked += 1
  assert checked == 14


def test_merged_export_loads_back_with_the_same_logits(tmp_path):
  source = os.path.join(FIXTURES, "qwen2")
  model = ml_collections.ConfigDict({"name": "llama", "init_from": source})
  policy = with_lora(build_policy(model, vocab_size=200, max_len=16), ALPHA)
  base = policy.init(jax.random.PRNGKey(0))
  base = policy.warm_start(base, policy.pretrained_params())
  full = lora.combine(base, random_adapters(base))
  out = checkpoint.save_pretrained(full, policy, str(tmp_path / "merged"))
  reloaded = build_policy(ml_collections.ConfigDict({"name": "llama", "init_from": out}),
                          vocab_size=200, max_len=16)
  params = reloaded.warm_start(reloaded.init(jax.random.PRNGKey(5)),
                               reloaded.pretrained_params())
  tokens = jax.random.randint(jax.random.PRNGKey(3), (2, 12), 0, 200)
  want, _ = policy.sequence_outputs(full, tokens)
  got, _ = reloaded.sequence_outputs(params, tokens)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  base_logits, _ = policy.sequence_outputs(base, tokens)
  assert np.max(np.abs(np.asarray(want - base_logits))) > 1e-2


def test_adapters_without_an_alpha_are_refused():
  policy = tiny_policy()
  base = policy.init(jax.random.PRNGKey(0))
  plain = build_policy(ml_collections.ConfigDict({"name": "llama", "num_layers": 2,
                                                  "d_model": 32, "num_heads": 4,
                                                  "num_kv_heads": 2, "mlp_dim": 48}),
                       vocab_size=40, max_len=16)
  with pytest.raises(ValueError, match="params hold LoRA adapters but this policy has no "
                     "lora_alpha"):
    plain.sequence_outputs(lora.combine(base, random_adapters(base)), TOKENS)
