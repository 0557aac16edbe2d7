"""The estimator lab's report and script: the template fills completely, the sentences follow the
numbers, the script writes into its workdir and touches the committed report only when asked.

The fast tests report made-up estimates through the lab's real statistics (claims 1–4 in
seconds, not a minute of compiles); the slow one runs the script end to end."""

import hashlib
import importlib.util
import os
import re
import string
import subprocess
import sys

import numpy as np
import pytest

from pg.lab import offpolicy
from pg.lab import claims, findings, problems, report
from pg.lab.estimates import AdvantageError
from pg.lab.statistics import Estimate, credit_statistics, statistics_of

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "experiments", "estimator_lab.py")
COMMITTED = os.path.join(ROOT, "reports", "estimator_lab", "report.md")
SIZES = (40, 160)  # the smallest N: 20 batches of 2, and N / 4 = 40 for claims 3 and 4
RNG = np.random.default_rng(0)


def made_up(exact_D, scale=1.0, spread=0.1, n=max(SIZES)):
  """n estimates of scale·∇J with Gaussian noise on the components ∇J uses, `[n, D]`."""
  return scale * exact_D + spread * RNG.normal(size=(n, exact_D.size)) * (exact_D != 0)


def cell(collapsed, seeds=4):
  """Claim 5's cell: `collapsed` of `seeds` runs, made-up final scores."""
  return claims.Cell(collapsed, seeds, np.linspace(0.2, 1.0, seeds))


CELLS = {(loss, lr): cell(n) for loss, counts in (("ppo", (0, 0, 1)), ("reinforce", (0, 2, 4)))
         for lr, n in zip((0.01, 0.1, 1.0), counts)}


def credit_case(name, critic, needle, needle_D, irrelevant_spread):
  """Made-up estimates with spread 0.1 on θ[t < 2] and `irrelevant_spread` on θ[t ≥ 2]."""
  cut = claims.NEEDLE_FIRST_IRRELEVANT * needle_D.size // needle.length
  spread_D = np.where(np.arange(needle_D.size) < cut, 0.1, irrelevant_spread)
  g_NxD = needle_D + spread_D * RNG.normal(size=(max(SIZES) // 4, needle_D.size))
  stats = credit_statistics(g_NxD, needle.length, claims.NEEDLE_FIRST_IRRELEVANT)
  return claims.CreditCase(name, critic, critic is None, None if critic is None else 0.1, stats)


def lambda_sweep(critic, exact_D, bias):
  """Claim 4's row for a critic: the advantage's bias² falls as bias·(1 − λ), its variance rises
  as 0.1·λ; the gradient's scale is 1 − bias·(1 − λ)."""
  adv = [AdvantageError(Estimate(bias * (1 - lam), 1e-3), Estimate(0.1 * lam, 1e-3))
         for lam in claims.LAMBDAS]
  grad = [statistics_of(made_up(exact_D, 1 - bias * (1 - lam), n=max(SIZES) // 4), exact_D)
          for lam in claims.LAMBDAS]
  return claims.LambdaSweep(critic, bias, tuple(adv), tuple(grad))


@pytest.fixture(scope="module")
def measured():
  """Claims 1–4 from made-up estimates: unbiased `none` and `gae`, `group_mean` at (G − 1)/G;
  claim 3's sequence-level `rloo` against per-token `gae`; claim 4's bias falling with λ."""
  problem, needle = problems.default_problem(), problems.needle_problem()
  exact_D, needle_D = (np.asarray(problems.exact_gradient(p)) for p in (problem, needle))
  g = {"none": made_up(exact_D, spread=0.3), "group_mean": made_up(exact_D, 0.75, 0.03),
       "gae": made_up(exact_D)}
  shifted = {**g, "none": made_up(exact_D, spread=3.0)}
  cases = (credit_case("rloo", None, needle, needle_D, 0.2),
           credit_case("gae", "exact", needle, needle_D, 0.0),
           credit_case("gae", "noisy, σ = 0.1", needle, needle_D, 0.05),
           credit_case("gae", "learned, M = 16", needle, needle_D, 0.1),
           credit_case("gae", "learned, M = 4,096", needle, needle_D, 0.01))
  return claims.Measurements(
      0, problem, max(SIZES) // 4, {"broken": "ValueError: made up"},
      claims.compare_estimators(g, shifted, exact_D, SIZES),
      claims.Credit(needle, np.linalg.norm(needle_D.reshape(needle.length, -1), axis=1), "gae",
                    cases),
      (lambda_sweep("exact", exact_D, 0.0), lambda_sweep("noisy, σ = 0.1", exact_D, 0.2)),
      claims.Collapse(claims.collapse_config(4), CELLS, None),
      offpolicy.Staleness((0, 4), {0: 0.0, 4: 0.1}, ("none", "sequence IS (no cap)"),
                          {("none", 0): offpolicy.Cell(0.0, 1.0),
                           ("none", 4): offpolicy.Cell(0.5, 2.0),
                           ("sequence IS (no cap)", 0): offpolicy.Cell(0.0, 1.0),
                           ("sequence IS (no cap)", 4): offpolicy.Cell(0.0, 0.5)}, 1.0),
      (offpolicy.LossCheck("reinforce", "token-mean", 0.0),
       offpolicy.LossCheck("clip_cov", "token-mean", 0.04)))


def test_the_template_has_a_field_for_every_placeholder_and_no_other(measured):
  template = report.template()
  assert template.is_valid()
  assert set(template.get_identifiers()) == set(report.fields(measured, 1.0))


def test_the_report_fills_with_no_leftover_placeholders(measured):
  text = report.render(measured, 12.3)
  assert "${" not in text and not re.search(r"\$[A-Za-z_]", text)
  committed = open(COMMITTED, encoding="utf-8").read()
  headings = lambda t: re.findall(r"^#+ .*$", t, re.M)
  assert headings(text) == headings(committed)  # the same sections, in the same order
  assert len(re.findall(r"^\|---", text, re.M)) == len(re.findall(r"^\|---", committed, re.M))
  assert "Regenerate: `python experiments/estimator_lab.py --update-report` (12 s" in text


def test_the_main_table_and_the_sentences_follow_the_z_test(measured):
  table = report.main_table(measured.bias)
  for name, s in measured.bias.top.items():
    row = next(line for line in table.splitlines() if line.startswith(f"| `{name}` |"))
    assert ("**biased**" in row) == s.biased
  assert measured.bias.biased == ["group_mean"]
  text = findings.claim_1_text(measured.bias)
  assert "no bias in `none` and `gae`" in text and "**The claim fails for `group_mean`**" in text
  assert "the share falls with every increase of M" in findings.claim_3_text(measured.credit)


def test_claim_5_sentences_follow_the_counts():
  text = findings.claim_5_text(CELLS)
  assert "`ppo` keeps every seed up to a learning rate of 0.1" in text
  assert "`reinforce` keeps every seed up to a learning rate of 0.01" in text
  assert "not confirmed for `ppo`" in text  # 1/4 against 0/4 is no evidence
  assert "the difference is not significant at 0.01 (p = 1)" in text


def test_toy_reward_by_hand():
  tokens_BxT = np.array([[2, 0, 0, 2], [0, 1, 2, 1], [1, 1, 1, 1]])
  np.testing.assert_allclose(problems.toy_reward(tokens_BxT), [1.5, 0.25, 1.0])
  np.testing.assert_allclose(problems.toy_reward(tokens_BxT, target_token=1), [1.0, 0.5, 2.0])


def _script():
  spec = importlib.util.spec_from_file_location("estimator_lab_script", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _digest(path):
  return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_the_script_writes_its_workdir_and_the_committed_report_only_when_asked(
    measured, tmp_path, monkeypatch):
  script = _script()
  monkeypatch.setattr(claims, "measure", lambda *args: measured)
  monkeypatch.setattr(script, "REPORT_DIR", str(tmp_path / "committed"))
  committed = _digest(COMMITTED)
  script.main(["--workdir", str(tmp_path / "work")])
  assert {p.name for p in (tmp_path / "work").iterdir()} == {report.REPORT, report.FIGURE}
  assert not (tmp_path / "committed").exists()
  script.main(["--workdir", str(tmp_path / "work"), "--update-report"])
  for name in (report.REPORT, report.FIGURE):
    assert _digest(tmp_path / "committed" / name) == _digest(tmp_path / "work" / name)
  assert _digest(COMMITTED) == committed


def test_the_script_defaults_to_a_workdir_under_runs():
  args = _script().parse_args([])
  assert args.workdir == os.path.join("runs", "estimator_lab") and not args.update_report
  assert tuple(args.groups) == report.DEFAULT_SIZES


def test_help():
  out = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True,
                       timeout=120, check=True).stdout
  assert "--workdir" in out and "--update-report" in out


@pytest.mark.slow
def test_the_script_end_to_end(tmp_path):
  committed = _digest(COMMITTED)
  cmd = [sys.executable, SCRIPT, "--workdir", str(tmp_path), "--groups", *map(str, SIZES),
         "--seeds", "2"]
  subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True, cwd=tmp_path)
  text = (tmp_path / report.REPORT).read_text(encoding="utf-8")
  assert "## Claim 5" in text and "| reinforce | 1 |" in text
  assert string.Template(text).get_identifiers() == []
  assert _digest(COMMITTED) == committed
