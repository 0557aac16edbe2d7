"""The verifiers of pg.tasks.verifiers extract what they say and compare as they say; every
procedural generator's reference is judged correct by its own verifier."""

import itertools
from fractions import Fraction

import numpy as np
import pytest

from pg.tasks import generators, verifiers
from pg.tasks.verifiers import (Verifier, answer_tag, boxed, check_weights, countdown_equal, equal,
                                extract, hash_answer, last_number, numeric_equal)


@pytest.mark.parametrize("text, expected", [
    ("The answer is 42.", "42"),
    ("1,234", "1234"),
    ("I paid $1,234,567.", "1234567"),
    ("-3.50", "-3.5"),
    ("7.0", "7"),
    ("+07", "7"),
    ("-0", "0"),
    ("no digits here", None),
    ("", None),
    ("from 3 to 5", "5"),
    ("so 3 + 4 = 7.", "7"),
    ("a half is .5", "0.5"),
])
def test_last_number(text, expected):
  assert last_number(text) == expected


@pytest.mark.parametrize("text, expected", [
    (r"so \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{1} then \boxed{ 2 }", "2"),
    (r"\boxed{\frac{1}{2}", None),       # unbalanced
    (r"\fbox{3}", "3"),
    (r"\fbox{3} and later \boxed{{4}}", "{4}"),
    ("no box", None),
])
def test_boxed(text, expected):
  assert boxed(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("She has 8 bags of 9.\n#### 72", "72"),
    ("#### 1,000", "1000"),
    ("#### 72.\nthanks", "72"),
    ("#### 3\nfirst try\n#### 4", "4"),
    ("working...\n####   \n", None),
    ("####", None),
    ("the answer is 72", None),
    ("#### Paris", "Paris"),
])
def test_hash_answer(text, expected):
  assert hash_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("<answer>1</answer> no, <answer> 2 </answer>", "2"),
    ("<answer></answer>", None),
    ("<answer>   </answer>", None),
    ("<answer>line one\nline two</answer>", "line one\nline two"),
    ("<answer>unclosed", None),
    ("nothing", None),
])
def test_answer_tag(text, expected):
  assert answer_tag(text) == expected


def test_extract_dispatches_by_name():
  assert extract("last_number", "so 3 + 4 = 7.") == "7"
  assert extract("boxed", r"\boxed{x}") == "x"
  assert extract("hash", "#### 1,234") == "1234"
  assert extract("answer_tag", "<answer>y</answer>") == "y"


@pytest.mark.parametrize("a, b, expected", [
    ("7", "7.0", True),
    ("0.5", "1/2", True),
    (r"\frac{1}{2}", "0.5", True),
    (r"\dfrac{3}{4}", "0.75", True),
    ("1,000", "1000", True),
    ("3", "4", False),
    ("0.33333", "1/3", False),       # 1e-5 relative apart: too far
    ("0.3333333333", "1/3", True),   # within 1e-6 relative
    ("Paris", " paris ", True),      # not numbers: exact after case-folding and stripping
    ("New  York", "new york", True),
    ("Paris", "London", False),
    ("7", "seven", False),
])
def test_numeric_equal(a, b, expected):
  assert numeric_equal(a, b) is expected
  assert numeric_equal(b, a) is expected


REF = "24 from 3, 8, 2"


@pytest.mark.parametrize("answer, expected", [
    ("3 * 8", True),                 # not every number has to be used
    ("(2 + 8 - 2) * 3", False),      # 2 given once, used twice
    ("3 * 8 * 1", False),            # 1 not given
    ("3 + 8 + 2", False),            # wrong value
    ("8 / 2 * 3 * 2", False),
    ("(8 + 2 * 8) / 2 * 2", False),
    ("8 * 3 = 24", True),            # what follows '=' is ignored
    ("8 × 3", True),
    ("(3 + 2) * 8 - 16", False),
    ("24", False),
    ("3 * (8", False),               # syntax error
    ("eight times three", False),
    ("", False),
    ("__import__('os')", False),
])
def test_countdown_equal(answer, expected):
  assert countdown_equal(answer, REF) is expected


def test_countdown_division_to_an_exact_integer():
  assert countdown_equal("(8 / 2) * 6", "24 from 2, 6, 8")
  assert countdown_equal("6 / (1 - 3 / 4)", "24 from 1, 3, 4, 6")   # fractions in between
  assert countdown_equal("8 / 3 * 9", "24 from 3, 8, 9")            # exact: 8/3·9 = 24
  assert not countdown_equal("7 / 2", "3 from 2, 7")                # 3.5, not 3
  assert not countdown_equal("8 / (2 - 2)", "4 from 2, 2, 8")       # division by zero


def test_countdown_refuses_exponent():
  assert countdown_equal("2 * 3 + 2", "8 from 2, 3, 2")
  assert not countdown_equal("2 ** 3", "8 from 2, 3")
  assert not countdown_equal("2 ^ 3", "8 from 2, 3")   # xor, not a power: refused as well


def test_countdown_repeated_numbers_may_be_used_as_often_as_given():
  assert countdown_equal("5 * 5", "25 from 5, 5")
  assert not countdown_equal("5 * 5 * 5", "125 from 5, 5")


def test_countdown_refuses_a_bad_reference():
  with pytest.raises(ValueError):
    countdown_equal("1 + 2", "3")


def test_equal_with_no_answer_is_false():
  for comparison in verifiers.COMPARISONS:
    assert equal(comparison, None, "7") is False
  assert equal("numeric", "7", None) is False
  assert equal("numeric", "7", 7) is True  # a numeric reference is compared as a string


def test_unknown_names_raise_naming_the_option():
  with pytest.raises(ValueError, match=r"config\.task\.options\.extractor.*'nope'"):
    extract("nope", "1")
  with pytest.raises(ValueError, match=r"config\.task\.options\.comparison.*'nope'"):
    equal("nope", "1", "1")
  with pytest.raises(ValueError, match=r"config\.task\.options\.extractor"):
    Verifier(extractor="nope")
  with pytest.raises(ValueError, match=r"config\.task\.options\.comparison"):
    Verifier(comparison="nope")


def test_verifier_components():
  v = Verifier("last_number", "numeric")
  out = v.components(["so 3 + 4 = 7", "it is 8", "no idea", "7.0."], ["7", "7", "7", 7])
  assert out == {"correct": [1.0, 0.0, 0.0, 1.0], "format": [1.0, 1.0, 0.0, 1.0],
                 "no_answer": [0.0, 0.0, 1.0, 0.0]}
  assert v.judge("#### 5", "5") == ("5", True)
  assert Verifier("hash", "numeric").judge("5", "5") == (None, False)


def test_check_weights():
  assert check_weights({"correct": 1, "format": 0.1}) == {"correct": 1.0, "format": 0.1}
  with pytest.raises(ValueError, match=r"config\.task\.options\.weights.*'style'"):
    check_weights({"correct": 1, "style": 0.5})
  for bad in ("1", None, True, float("nan"), float("inf")):
    with pytest.raises(ValueError, match=r"config\.task\.options\.weights\.format"):
      check_weights({"correct": 1, "format": bad})
  with pytest.raises(ValueError, match=r"config\.task\.options\.weights"):
    check_weights({})


# --- the procedural generators ------------------------------------------------------------------

def draw(generator, num, seed=0, **options):
  rng = np.random.default_rng(seed)
  return [generator(rng, **options) for _ in range(num)]


@pytest.mark.parametrize("name", sorted(set(generators.GENERATORS) - {"countdown"}))
def test_generator_reference_judged_correct_by_its_own_verifier(name):
  generator, extractor, comparison = generators.GENERATORS[name]
  v = Verifier(extractor, comparison)
  for e in draw(generator, 200):
    assert isinstance(e.prompt, str) and e.prompt and isinstance(e.reference, str)
    answer, ok = v.judge(e.reference, e.reference)
    assert ok, (e.prompt, e.reference, answer)
    wrong = str(int(e.reference) + 1)
    assert not v.judge(f"The answer is {wrong}.", e.reference)[1]


def test_all_generators_are_covered():
  assert set(generators.GENERATORS) == {"arithmetic", "letter_count", "countdown"}


@pytest.mark.parametrize("operations", ["+-", "+-*", "*"])
def test_arithmetic_answer_matches_metadata(operations):
  ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
  seen = set()
  for e in draw(generators.arithmetic, 200, operations=operations):
    m = e.metadata
    assert m["op"] in operations
    seen.add(m["op"])
    assert e.reference == str(ops[m["op"]](m["a"], m["b"]))
    assert int(e.reference) >= 0
    assert str(m["a"]) in e.prompt and str(m["b"]) in e.prompt
  assert seen == set(operations)


def test_arithmetic_refuses_unknown_operation():
  with pytest.raises(ValueError, match=r"config\.task\.options\.operations"):
    generators.arithmetic(np.random.default_rng(0), operations="/")


def test_letter_count_answer_matches_metadata():
  absent = 0
  for e in draw(generators.letter_count, 200):
    word, letter = e.metadata["word"], e.metadata["letter"]
    assert e.reference == str(word.count(letter))
    assert f'"{letter}"' in e.prompt and f'"{word}"' in e.prompt
    absent += word.count(letter) == 0
  assert 0 < absent < 200  # both letters in the word and letters not in it occur


def solve_countdown(numbers, target):
  """An expression over a sub-multiset of `numbers` with + - * / and any bracketing whose value
  is `target`, by exhaustive search (fine for a handful of numbers), or None."""
  items = [(Fraction(x), str(x)) for x in numbers]

  def search(items):
    for value, text in items:
      if value == target:
        return text
    for i, j in itertools.permutations(range(len(items)), 2):
      (a, ta), (b, tb) = items[i], items[j]
      rest = [items[t] for t in range(len(items)) if t not in (i, j)]
      options = [(a + b, f"({ta} + {tb})"), (a - b, f"({ta} - {tb})"), (a * b, f"({ta} * {tb})")]
      if b != 0:
        options.append((a / b, f"({ta} / {tb})"))
      for value, text in options:
        found = search(rest + [(value, text)])
        if found is not None:
          return found
    return None
  return search(items)


def test_countdown_instances_are_solvable_and_checked_by_their_verifier():
  """For 20 instances a brute-force solver finds an expression, and the generator's verifier
  accepts it written in the asked format (and refuses a wrong one)."""
  generator, extractor, comparison = generators.GENERATORS["countdown"]
  v = Verifier(extractor, comparison)
  for e in draw(generator, 20, seed=3):
    target, numbers = e.metadata["target"], e.metadata["numbers"]
    assert e.reference == verifiers.countdown_reference(target, numbers)
    assert numbers == sorted(numbers) and 0 < target <= 1000
    expression = solve_countdown(numbers, target)
    assert expression is not None, e.prompt
    answer, ok = v.judge(f"Let me think.\n<answer>{expression}</answer>", e.reference)
    assert ok and answer == expression, (e.prompt, expression)
    assert not v.judge(f"<answer>{expression} + {target}</answer>", e.reference)[1]
    assert not v.judge(expression, e.reference)[1]  # no <answer> tag: no answer


def test_generators_are_seeded():
  for name, (generator, _, _) in generators.GENERATORS.items():
    a, b = draw(generator, 30, seed=5), draw(generator, 30, seed=5)
    assert a == b, name
    assert [e.prompt for e in a] != [e.prompt for e in draw(generator, 30, seed=6)], name


@pytest.mark.parametrize("text, expected", [
    ("pages 3-5", "5"), ("10-3", "3"), ("x = -4", "-4"), ("(-2)", "-2"), ("f(x)-1", "1"),
    ("total: -12.5.", "-12.5")])
def test_a_hyphen_after_a_word_or_digit_is_not_a_minus_sign(text, expected):
  assert verifiers.last_number(text) == expected


def test_gsm8k_answer_lines_and_references():
  """'#### $18' reads 18; a whole GSM8K solution given as the reference is reduced to its
  '####' answer (boxed likewise), while a plain reference is compared as it is."""
  assert verifiers.hash_answer("#### $18") == "18" and verifiers.hash_answer("#### 25%") == "25"
  solution = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
  assert verifiers.Verifier("hash", "numeric").judge("so #### 72", solution) == ("72", True)
  assert verifiers.Verifier("boxed", "numeric").judge(r"\boxed{3}", r"so \boxed{3}")[1]
  assert verifiers.Verifier("last_number", "numeric").judge("it is 2", "1/2") == ("2", False)


def test_components_refuse_lists_of_different_lengths():
  with pytest.raises(ValueError, match="2 responses, 1 references"):
    verifiers.Verifier().components(["7", "7"], ["7"])
