"""Core math (layer 0): pure, jit- and vmap-safe functions and the registries; `pg` re-exports them."""
