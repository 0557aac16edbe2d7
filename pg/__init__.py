"""`pg`: pure JAX functions for policy-gradient RLHF.

Conventions (written down once, tested in tests/core/test_conventions.py):

* Arrays are batch-major `[B, T]` over *response* tokens t in [0, T); names carry their shapes
  (`logp_BxT`, `logits_BxTxV`, `scores_B`).
* `mask_BxT` is a float mask, 1.0 on generated (trainable) tokens, 0.0 on padding.
* The sequence score R sits on the last generated token (the last t with m_t = 1).
* Reward, return and advantage buffers are float32, whatever the dtype of scores or tokens;
  log-probs are computed in float32 whatever the logits' dtype.
* Masked means divide by the number of unmasked tokens, never by T.
* Returns (critic targets) are computed before any advantage whitening.
* Log-ratios are clamped to ±20 before `exp`.
* Samples of one prompt sit in `group_size` consecutive rows (B = prompts × G).
* The sampler keeps the end token (mask 1) and pads after it (mask 0); behaviour log-probs come
  from the logits each token was drawn from, at the trainer's temperature. The pad token is
  never emitted (the policy masks it for sampler and trainer alike).
* Hyperparameters a user may sweep are float32 leaves of a dict (`pg.hparams`), traced under
  `jit`; shapes, loop counts and names are static.
* Advantage estimators and policy losses are chosen by name from registries
  (`pg.registry`), one signature each; a registration carries its facts (critic, group size,
  KL handling, its own hyperparameters, aggregation). An estimator that does not register
  `handles_kl` never sees the KL penalty, and the registry adds it.

This module is the flat API of the core layer (`pg/core/`). The other layers are packages:
`pg.policy` (the Policy interface and architectures), `pg.tasks`, `pg.train` (build, the
compiled step), `pg.run` (experiments, sweeps), `pg.rlhf`, `pg.lab`, `pg.bench`.
"""

from pg.core import advantages as _advantages  # registers the built-in estimators
from pg.core import group_advantages as _group_advantages  # REINFORCE++-baseline, OPO, ...
from pg.core import policy_losses as _policy_losses  # registers the built-in losses
from pg.core import sequence_losses as _sequence_losses  # GSPO, GSPO-token, GMPO
from pg.core import token_losses as _token_losses  # SAPO, CISPO, DPPO, truncated IS
from pg.core import covariance_losses as _covariance_losses  # Clip-Cov, KL-Cov
from pg.core.aggregation import MODES as AGGREGATION_MODES
from pg.core.aggregation import aggregate_loss
from pg.core.baselines import (grpo_advantages, group_mean_advantages, init_baseline_state,
                          moving_average_advantages, moving_average_baseline, rloo_advantages,
                          update_moving_average)
from pg.core import hparams, registry
from pg.core.hparams import make_hparams
from pg.core.kl import kl_estimate, kl_k1, kl_k2, kl_k3, log_ratio
from pg.core.logprobs import (head_log_probs_and_entropy, sequence_log_probs, token_entropy, token_log_probs,
                         token_log_probs_and_entropy)
from pg.core.masked import last_token_mask, masked_mean, masked_sum, masked_var, masked_whiten
from pg.core.multistep import (discounted_returns, generalized_advantage_estimation,
                          generalized_advantage_estimation_associative, lambda_returns)
from pg.core.policy_losses import (clipped_value_loss, entropy_bonus, ppo_clipped_surrogate,
                              reinforce_sequence_surrogate, reinforce_token_surrogate)
from pg.core.covariance_losses import clip_cov_surrogate, kl_cov_surrogate, token_covariance
from pg.core.group_advantages import (maxrl_advantages, opo_advantages,
                                      passk_advantages)
from pg.core.sequence_losses import (gmpo_surrogate, gspo_sequence_ratio, gspo_surrogate,
                                     gspo_token_surrogate)
from pg.core.token_losses import (binary_kl, cispo_surrogate, dppo_surrogate, sapo_gate,
                                  sapo_surrogate, truncated_is_surrogate)
from pg.core.registry import (ADVANTAGE_ESTIMATORS, POLICY_LOSSES, AdvantageInputs,
                         AdvantageOutputs, PolicyLossInputs, get_advantage, get_policy_loss,
                         register_advantage, register_policy_loss)
from pg.core.rewards import per_token_rewards

__version__ = "0.1.0"
