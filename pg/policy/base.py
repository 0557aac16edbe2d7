"""The Policy interface every architecture implements, and the registry that builds one by name.

The sampler, the train step, the supervised stages and the FLOP counter see a policy only
through these methods; none of them reads its parameter tree. An architecture is one module with
one class implementing `Policy` and one `@register_policy(name, options=...)` line; a config
selects it with `config.model.name`.

    init(key) -> params
    response_stats(params, prompts_NxP, tokens_BxT, temperature[, prompt_mask_NxP])
        -> (logp_BxT, entropy_BxT, values_BxT | None)     # G = B / N consecutive rows per prompt
    sequence_outputs(params, tokens_BxL[, mask_BxL]) -> (logits_BxLxV, values_BxL | None)
    init_cache(batch_size, block_sizes) -> cache
    decode(params, tokens_BxL, pos, cache, block[, mask_BxL]) -> (logits_BxLxV, cache)
    token_flops(attended) -> TokenFlops
    warm_start(params, source_params) -> params
    pretrained_params() -> params | None                # a checkpoint's weights, host arrays

Prompts of different lengths are left-padded, with a float mask (1 on real tokens) passed as
`prompt_mask_NxP` / `mask_BxL` to a policy whose `takes_prompt_mask` is True: a row's pads are
never attended and its positions count from its first real token, so each row's numbers are
those it gets alone. Without a mask every token is real.

Capabilities are part of the object: with N < B, `response_stats` runs each prompt once for its
G samples (when `shares_prompts` is True; the train step passes N = B otherwise), and
`logprob_chunk_size` makes it apply the LM head over the vocabulary in chunks. `masked_ids` are
tokens the policy never emits (a task's pad token): every logit the policy gives, to the
sampler and to the trainer alike, has them at −1e9, so both use one distribution (ρ = 1).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple, Optional, Protocol, runtime_checkable

import jax

from pg.core.registry import check_new_name
from pg.policy import lora


class TokenFlops(NamedTuple):
  """Forward FLOPs of one token (a backward pass costs twice its forward)."""
  trunk: float   # the policy trunk, attending over `attended` positions
  head: float    # the LM head (where it is applied)
  critic: float  # a separate critic trunk, 0 without one


@runtime_checkable
class Policy(Protocol):
  """A language-model policy with an optional value head (see the module docstring)."""
  vocab_size: int
  max_len: int                         # context: prompt + response positions
  has_values: bool                     # a value head (a critic) is part of the model
  shares_prompts: bool                 # response_stats accepts N < B prompts
  logprob_chunk_size: Optional[int]    # None: dense LM head
  masked_ids: tuple                    # token ids never emitted (logit −1e9)
  takes_prompt_mask: bool              # accepts left-padded prompts with a mask

  def init(self, key) -> Any: ...

  def response_stats(self, params, prompts_NxP, tokens_BxT, temperature,
                     prompt_mask_NxP=None): ...

  def sequence_outputs(self, params, tokens_BxL, mask_BxL=None): ...

  def init_cache(self, batch_size: int, block_sizes=None): ...

  def decode(self, params, tokens_BxL, pos, cache, block: int = 0, mask_BxL=None): ...

  def token_flops(self, attended: int) -> TokenFlops: ...

  def warm_start(self, params, source_params): ...

  def pretrained_params(self): ...


class FlaxPolicy:
  """What a policy made of a config `cfg` (with vocab_size, max_len, value_head) and a Flax
  module class `module` (taking `cfg`) shares: the interface's facts, `apply`, and the −1e9 on
  `masked_ids` that every logit it gives carries."""
  cfg: Any
  module: Any
  masked_ids: tuple

  @property
  def vocab_size(self) -> int:
    return self.cfg.vocab_size

  @property
  def max_len(self) -> int:
    return self.cfg.max_len

  @property
  def has_values(self) -> bool:
    return self.cfg.value_head != "none"

  def _apply(self, params, *args, method):
    """The module applied to `params`, with LoRA adapters when `params` holds a "lora"
    collection (`pg.policy.lora`; scaled by the policy's `lora_alpha`)."""
    module = self.module(self.cfg)
    if lora.LORA not in params:
      return module.apply(params, *args, method=method)
    if getattr(self, "lora_alpha", None) is None:
      raise ValueError("params hold LoRA adapters but this policy has no lora_alpha "
                       "(pg.policy.base.with_lora).")
    return lora.apply(module, params, *args, method=method, alpha=self.lora_alpha)

  def _masked(self, logits_xV):
    """`logits_xV` with −1e9 at the ids never emitted (finite, so p·log p stays 0 in the
    entropy)."""
    if not self.masked_ids:
      return logits_xV
    return logits_xV + jax.numpy.zeros((self.cfg.vocab_size,), jax.numpy.float32).at[
        jax.numpy.asarray(self.masked_ids)].set(-1e9)


class PolicyRegistration(NamedTuple):
  build: Callable     # build(options, *, vocab_size, max_len, logprob_chunk_size, masked_ids)
  options: dict       # config.model fields the architecture reads, with their defaults


POLICIES: dict[str, PolicyRegistration] = {}


def register_policy(name: str, *, options: dict, override: bool = False):
  """Decorator: registers `build(options, *, vocab_size, max_len, logprob_chunk_size,
  masked_ids) -> Policy` under `name`; `options` are the `config.model` fields it reads, with
  their defaults."""
  def register(build):
    check_new_name(POLICIES, "policy", name, override)
    params = inspect.signature(build).parameters
    if not {"vocab_size", "max_len", "logprob_chunk_size", "masked_ids"} <= set(params):
      raise TypeError(f"register_policy {name!r}: {build.__name__}{inspect.signature(build)} "
                      f"must take (options, *, vocab_size, max_len, logprob_chunk_size, "
                      f"masked_ids).")
    POLICIES[name] = PolicyRegistration(build, dict(options))
    return build
  return register


def build_policy(model_config, *, vocab_size: int, max_len: int,
                 logprob_chunk_size: Optional[int] = None, masked_ids=()) -> Policy:
  """The policy `model_config.name` (default "gpt") built from the other `model_config` fields,
  never emitting `masked_ids`.

  A field the architecture does not read is refused, naming it, as is an unknown name."""
  fields = dict(model_config)
  name = fields.pop("name", "gpt")
  if name not in POLICIES:
    raise KeyError(f"config.model.name: unknown model {name!r}; known: "
                   f"{', '.join(sorted(POLICIES))}.")
  registration = POLICIES[name]
  unknown = sorted(set(fields) - set(registration.options))
  if unknown:
    raise KeyError(f"config.model: field(s) {unknown} are not options of model {name!r}; its "
                   f"options: {', '.join(registration.options)}.")
  options = {**registration.options, **fields}
  return registration.build(options, vocab_size=vocab_size, max_len=max_len,
                            logprob_chunk_size=logprob_chunk_size,
                            masked_ids=tuple(int(i) for i in masked_ids))


def with_compute_dtype(policy, dtype: str):
  """The same policy (same parameters) computing in `dtype` ("float32" | "bfloat16"): a
  bfloat16 sampler beside a float32 trainer, as an inference engine is."""
  import dataclasses
  cfg = getattr(policy, "cfg", None)
  if cfg is None or not hasattr(cfg, "dtype"):
    raise ValueError(f"config.sampler_dtype: {type(policy).__name__} has no compute dtype to "
                     f"change.")
  if dtype not in ("float32", "bfloat16"):
    raise ValueError(f"config.sampler_dtype must be 'float32' or 'bfloat16', got {dtype!r}.")
  return dataclasses.replace(policy, cfg=dataclasses.replace(cfg, dtype=dtype))


def with_lora(policy, alpha: float):
  """The same policy applying LoRA adapters (`pg.policy.lora`) scaled by α / r whenever its
  params carry them; params without adapters give the base model, as before."""
  import dataclasses
  if not hasattr(policy, "lora_alpha"):
    raise ValueError(f"config.lora: {type(policy).__name__} takes no LoRA adapters.")
  return dataclasses.replace(policy, lora_alpha=float(alpha))


def refuse_mask(policy, mask, name: str) -> None:
  """A policy that takes prompts of one length refuses a prompt mask, naming itself."""
  if mask is not None:
    raise ValueError(f"{name}: this model ({type(policy).__name__}) takes prompts of one length; "
                     f"a prompt mask needs a model with takes_prompt_mask (config.model.name = "
                     f"'llama').")


def abstract_params(policy: Policy):
  """The policy's parameters as shapes and dtypes: nothing runs or compiles."""
  return jax.eval_shape(policy.init, jax.ShapeDtypeStruct((2,), jax.numpy.uint32))
