"""The RLHF pipeline (layer 4): π_ref, preferences, a reward model, KL-regularised RL, report."""

from pg.rlhf.pipeline import *  # noqa: F401,F403
