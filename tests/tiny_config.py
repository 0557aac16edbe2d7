"""The tiny needle config that the train, shared-prompt, crash and bad-input tests start from
(2 seeds, 8 prompts × 4 samples, one layer of width 32): it learns within a few chunks on a
CPU."""

from pg import configs


def tiny(**overrides):
  """The tiny config with fields replaced; a dict value updates that block (`model={...}`)."""
  c = configs.base_config()
  c.task.name = "needle"
  c.task.options = {"length": 4, "num_symbols": 2, "exclusive": False}
  c.model.update(num_layers=1, d_model=32, num_heads=2)
  c.num_seeds, c.num_prompts, c.group_size = 2, 8, 4
  c.updates_per_chunk, c.num_chunks, c.checkpoint_every = 5, 2, 1
  c.hparams.learning_rate = 3e-3
  for k, v in overrides.items():
    if isinstance(v, dict):
      c[k].update(v)
    else:
      c[k] = v
  return c
