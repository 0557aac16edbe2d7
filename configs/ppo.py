"""PPO with a learned critic (separate trunk) and GAE, KL to the initial policy in the reward.

    python experiments/train.py --config configs/ppo.py

400 updates, 2 epochs × 2 minibatches, a critic as large as the policy. With ⟨ppo.seeds: 8⟩
seeds (reports/results.md): ⟨ppo.wall: 7 min 12 s⟩ on a 2-core CPU; mean score over the first / last
10% of updates, 95% t-interval across seeds, ⟨ppo.first10: 0.07 ± 0.02⟩ →
⟨ppo.last10: 0.68 ± 0.21⟩; per seed:
⟨ppo.per_seed: 0.27, 0.67, 0.96, 0.77, 0.74, 0.66, 0.40, 0.99⟩.
"""

from pg.run.configs import base_config


def get_config():
  c = base_config()
  c.task.name = "needle"
  c.num_prompts = 32
  c.group_size = 4            # not needed by GAE; keeps the batch at 128 samples
  c.model.value_head = "separate"
  c.advantage = "gae"
  c.policy_loss = "ppo"
  c.whiten_advantages = True
  c.kl_placement = "reward"
  c.kl_estimator = "k1"
  c.ppo_epochs = 2
  c.num_minibatches = 2
  c.hparams.kl_coef = 0.01
  c.hparams.gamma = 1.0
  c.hparams.lam = 0.95
  c.hparams.learning_rate = 1e-3
  c.hparams.entropy_coef = 0.01
  c.num_chunks = 40
  return c
