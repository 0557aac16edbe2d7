"""Stale samples and rollout correction, measured exactly on the lab's problem, and every
registered loss against REINFORCE at ρ = 1."""

import numpy as np
import pytest

from pg.lab import offpolicy, problems


@pytest.fixture(scope="module")
def measured():
  p = problems.default_problem()
  return offpolicy.staleness(p), offpolicy.on_policy_losses(p)


def test_only_untruncated_sequence_is_is_unbiased_for_stale_samples(measured):
  s, _ = measured
  for c in s.corrections:
    assert s.cells[(c, 0)].bias < offpolicy.UNBIASED  # on-policy, every correction is exact
  for k in s.staleness[1:]:
    assert s.cells[("sequence IS (no cap)", k)].bias < offpolicy.UNBIASED
    assert s.cells[("none", k)].bias > 0.1
    assert s.cells[("token TIS", k)].bias > offpolicy.UNBIASED  # token ratios miss the prefix
  assert all(s.kl[a] < s.kl[b] for a, b in zip(s.staleness, s.staleness[1:]))
  assert "only sequence IS (no cap) is unbiased at every k" in offpolicy.staleness_text(s)


def test_the_staleness_trajectory_is_exact_ascent():
  p = problems.default_problem()
  thetas = offpolicy.trajectory(p, steps=2)
  js = [float(np.asarray(problems.tabular.exact_expectation(t, p.seqs_NxT, p.scores_N)))
        for t in thetas]
  assert js[0] < js[1] < js[2]


def test_the_new_losses_are_reinforce_on_policy(measured):
  _, checks = measured
  by = {c.loss: c for c in checks}
  for name in ("reinforce", "ppo", "gspo", "gspo_token", "gmpo", "sapo", "cispo", "dppo_tv",
               "dppo_kl", "tis", "kl_cov"):
    assert by[name].relative_difference < offpolicy.EQUAL, by[name]
  assert by["gspo"].aggregation == "seq-mean-token-mean"
  assert by["clip_cov"].relative_difference > offpolicy.EQUAL  # it detaches tokens even at ρ = 1
  text = offpolicy.losses_text(checks)
  assert "`clip_cov` differs by" in text and "`gspo`" in text
