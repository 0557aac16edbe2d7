"""Registrations carry their facts (critic, group size, KL handling, hyperparameters,
aggregation), the config checks read them, and a fork's estimator cannot drop the KL penalty."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pg
from pg import train
from pg.core import advantages
from tiny_config import tiny


@pytest.fixture
def restore_registries():
  saved = dict(pg.ADVANTAGE_ESTIMATORS), dict(pg.POLICY_LOSSES)
  yield
  for table, old in zip((pg.ADVANTAGE_ESTIMATORS, pg.POLICY_LOSSES), saved):
    table.clear()
    table.update(old)


def kl_inputs(seed=0, B=6, T=5, G=3):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  mask = (jnp.arange(T)[None, :] < jax.random.randint(k1, (B, 1), 1, T + 1)).astype(jnp.float32)
  return pg.AdvantageInputs(jax.random.normal(k2, (B,)), mask,
                            kl_BxT=jax.random.normal(k3, (B, T)) * mask, group_size=G)


def my_baseline(inputs, hp, state):
  """The README's fork: A = R − mean(R), returns of the score; it never reads inputs.kl_BxT."""
  adv_B = inputs.scores_B - inputs.scores_B.mean()
  m_BxT = jnp.asarray(inputs.mask_BxT, jnp.float32)
  return pg.AdvantageOutputs(
      adv_B[:, None] * m_BxT,
      pg.discounted_returns(pg.per_token_rewards(inputs.scores_B, m_BxT), m_BxT, hp["gamma"]),
      state)


def test_a_fork_estimator_that_ignores_the_kl_still_pays_it(restore_registries):
  pg.register_advantage("my_baseline")(my_baseline)
  inputs, hp = kl_inputs(), pg.make_hparams(kl_coef=0.3, gamma=0.9)
  out = pg.get_advantage("my_baseline")(inputs, hp, pg.init_baseline_state())
  m = inputs.mask_BxT
  penalty_BxT = -0.3 * inputs.kl_BxT * m
  adv_B = inputs.scores_B - inputs.scores_B.mean()
  np.testing.assert_allclose(out.advantages_BxT,
                             adv_B[:, None] * m + pg.discounted_returns(penalty_BxT, m, 1.0),
                             rtol=1e-5, atol=1e-6)
  rewards_BxT = pg.per_token_rewards(inputs.scores_B, m, inputs.kl_BxT, hp["kl_coef"])
  np.testing.assert_allclose(out.returns_BxT, pg.discounted_returns(rewards_BxT, m, 0.9),
                             rtol=1e-5, atol=1e-6)
  # Without the composition the penalty would be gone: the raw function differs.
  raw = my_baseline(inputs, hp, pg.init_baseline_state())
  assert np.abs(np.asarray(raw.advantages_BxT - out.advantages_BxT)).max() > 0.05


def test_an_estimator_that_handles_the_kl_gets_it_unchanged(restore_registries):
  seen = []

  @pg.register_advantage("sees_kl", handles_kl=True)
  def sees_kl(inputs, hp, state):
    seen.append(inputs.kl_BxT)
    return advantages.no_baseline(inputs, hp, state)
  inputs = kl_inputs()
  pg.get_advantage("sees_kl")(inputs, pg.make_hparams(kl_coef=0.1), None)
  assert seen[0] is inputs.kl_BxT


@pytest.mark.parametrize("name", ["none", "rloo", "grpo", "group_mean", "moving_average"])
def test_sequence_estimators_put_the_kl_return_to_go_on_every_token(name):
  """A_t = (R − b) − β Σ_{s≥t} kl_s: the composition gives the built-ins' documented form."""
  inputs, hp = kl_inputs(1), pg.make_hparams(kl_coef=0.5)
  state = pg.init_baseline_state()
  with_kl = pg.get_advantage(name)(inputs, hp, state).advantages_BxT
  without = pg.get_advantage(name)(inputs.replace(kl_BxT=None), hp, state).advantages_BxT
  m = inputs.mask_BxT
  np.testing.assert_allclose(with_kl - without,
                             pg.discounted_returns(-0.5 * inputs.kl_BxT * m, m, 1.0),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_training_a_fork_of_rloo_with_a_kl_reward_matches_the_built_in(restore_registries):
  """A fork that re-implements RLOO on the scores alone, trained with the KL in the reward,
  gives the built-in RLOO's metrics: the trainer-facing estimator composes the penalty."""
  @pg.register_advantage("my_rloo", min_group_size=2)
  def my_rloo(inputs, hp, state):
    adv_B = pg.rloo_advantages(inputs.scores_B, inputs.group_size)
    m_BxT = jnp.asarray(inputs.mask_BxT, jnp.float32)
    rewards_BxT = pg.per_token_rewards(inputs.scores_B, m_BxT)
    return pg.AdvantageOutputs(adv_B[:, None] * m_BxT,
                               pg.discounted_returns(rewards_BxT, m_BxT, hp["gamma"]), state)

  def metrics(advantage):
    c = tiny(advantage=advantage, kl_placement="reward", num_seeds=1, updates_per_chunk=3,
             hparams={"kl_coef": 0.5})
    init, chunk = train.make_programs(c, *train.build(c))
    return jax.device_get(chunk(init(train.seed_keys(c), train.hparams_from_config(c)))[1])
  fork, built_in = metrics("my_rloo"), metrics("rloo")
  assert float(np.max(built_in["kl_to_ref"][:, 1:])) > 0  # the penalty is live
  for k in built_in:
    np.testing.assert_allclose(fork[k], built_in[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_config_checks_read_the_registration_facts(restore_registries):
  pg.register_advantage("pairwise", min_group_size=3)(advantages.no_baseline)
  pg.register_advantage("critic_only", needs_critic=True)(advantages.no_baseline)
  with pytest.raises(ValueError, match=r"config.group_size must be >= 3 for advantage "
                                       r"'pairwise' .*got 2"):
    train.build(tiny(advantage="pairwise", group_size=2))
  train.build(tiny(advantage="pairwise", group_size=3))
  with pytest.raises(ValueError, match="advantage 'critic_only' needs a critic"):
    train.build(tiny(advantage="critic_only"))
  train.build(tiny(advantage="critic_only", model={"value_head": "shared"}))


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_a_loss_declares_its_own_swept_hyperparameter(restore_registries):
  @pg.register_policy_loss("tiny_clip", hparams={
      "tiny_eps": (3e-4, 0.0, 1.0, True, False, "a GSPO-sized clip width")})
  def tiny_clip(inputs, hp):
    ratio = jnp.exp(inputs.logp_BxT - inputs.old_logp_BxT)
    clipped = jnp.clip(ratio, 1 - hp["tiny_eps"], 1 + hp["tiny_eps"])
    return -jnp.minimum(ratio, clipped) * inputs.advantages_BxT * inputs.mask_BxT, {}

  assert float(pg.make_hparams()["tiny_eps"]) == pytest.approx(3e-4)
  with pytest.raises(ValueError, match=r"hyperparameter `tiny_eps` \(a GSPO-sized clip width\) "
                                       r"must lie in \(0.0, 1.0\]"):
    pg.make_hparams(tiny_eps=0.0)
  c = tiny(policy_loss="tiny_clip", num_seeds=1, updates_per_chunk=1)
  c.hparams.tiny_eps = 4e-4
  task, policy = train.build(c)
  init, chunk = train.make_programs(c, task, policy)
  state = init(train.seed_keys(c), train.hparams_from_config(c))
  assert float(state.hp["tiny_eps"][0]) == pytest.approx(4e-4)
  state, _ = chunk(state)
  state = init(train.seed_keys(c), pg.make_hparams(tiny_eps=1e-3))
  chunk(state)  # another value: the same program
  assert chunk._cache_size() == 1


def test_declared_hyperparameters_cannot_shadow_others(restore_registries):
  with pytest.raises(ValueError, match="hyperparameter 'learning_rate' is already declared"):
    pg.register_policy_loss("bad", hparams={"learning_rate": (1.0, 0, 1, False, False, "")})(
        lambda inputs, hp: (inputs.logp_BxT, {}))
  with pytest.raises(TypeError, match=r"must be declared as \(default, low, high"):
    pg.register_policy_loss("bad", hparams={"bad_eps": 0.2})(
        lambda inputs, hp: (inputs.logp_BxT, {}))
  assert "bad" not in pg.POLICY_LOSSES


def test_a_family_of_losses_may_share_an_identically_declared_hyperparameter(
    restore_registries):
  """GSPO's sequence and token forms share `gspo_eps_low`; a different declaration is refused."""
  assert pg.POLICY_LOSSES["gspo"].hparams["gspo_eps_low"] == \
      pg.POLICY_LOSSES["gspo_token"].hparams["gspo_eps_low"]
  spec = pg.POLICY_LOSSES["gspo"].hparams["gspo_eps_low"]
  pg.register_policy_loss("gspo_variant", hparams={"gspo_eps_low": spec})(
      lambda inputs, hp: (inputs.logp_BxT, {}))
  changed = (0.1,) + spec[1:]
  with pytest.raises(ValueError, match="'gspo_eps_low' is already declared"):
    pg.register_policy_loss("bad", hparams={"gspo_eps_low": changed})(
        lambda inputs, hp: (inputs.logp_BxT, {}))
  assert "bad" not in pg.POLICY_LOSSES


def test_a_loss_defined_with_an_aggregation_sets_it(restore_registries):
  pg.register_policy_loss("per_sequence", aggregation="seq-mean-token-mean")(
      lambda inputs, hp: (-inputs.advantages_BxT * inputs.logp_BxT * inputs.mask_BxT, {}))
  assert train.aggregation(tiny(policy_loss="per_sequence")) == "seq-mean-token-mean"
  assert train.aggregation(tiny()) == "token-mean"
  assert train.aggregation(tiny(aggregation="seq-mean-token-sum")) == "seq-mean-token-sum"
  with pytest.raises(ValueError, match="config.aggregation: policy loss 'per_sequence' is "
                                       "defined with 'seq-mean-token-mean', got 'token-mean'"):
    train.build(tiny(policy_loss="per_sequence", aggregation="token-mean"))
  with pytest.raises(ValueError, match="register policy loss 'x': aggregation must be one of"):
    pg.register_policy_loss("x", aggregation="mean")(lambda inputs, hp: (inputs.logp_BxT, {}))
