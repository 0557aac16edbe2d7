"""Policies (layer 2): the Policy interface, the architectures behind it, and the sampler."""

from pg.policy import gpt as _gpt  # registers "gpt"
from pg.policy import llama as _llama  # registers "llama"
from pg.policy.base import (POLICIES, Policy, TokenFlops, abstract_params, build_policy,
                            register_policy)
