"""Policies (layer 1): the Policy interface, the architectures behind it, and the sampler."""

from pg.policy import gpt as _gpt  # registers "gpt"
from pg.policy.base import (POLICIES, Policy, TokenFlops, abstract_params, build_policy,
                            register_policy)
