"""Verifiers: an answer extracted from a response, compared with the reference, and a reward made
of weighted components.

    extract("last_number", "so 3 + 4 = 7.")        -> "7"
    extract("boxed", r"... \\boxed{\\frac{1}{2}}")  -> "\\frac{1}{2}"
    extract("hash", "... #### 1,234")               -> "1234"
    equal("numeric", "7.0", "7")                    -> True
    reward = verifier_reward("last_number", "numeric", weights={"correct": 1, "format": 0.1})
    reward(prompts, responses, references) -> {"correct": [...], "format": [...]}

Extractors (`EXTRACTORS`): the last number in the text ("last_number"); the content of the last
`\\boxed{...}`, braces balanced ("boxed"); what follows the last "####" up to the end of its line
("hash", GSM8K's answer line; a leading "$" or trailing "%" dropped); the content of the last
<answer>...</answer> ("answer_tag"). A reference written in the hash or boxed format (a whole
GSM8K solution) is reduced to its answer first. A sign belongs to a number only where it cannot
be a hyphen ("pages 3-5" → "5"). A number is normalised: thousands commas and a trailing period
dropped, "+" and leading zeros removed, "-0" → "0", an integral float written as an int.

Comparisons (`COMPARISONS`): "exact" (after stripping, case-folding and collapsing spaces),
"numeric" (both parse as numbers, fractions a/b or \\frac{a}{b}, equal within a relative 1e-6;
else exact), "countdown" (an expression over the reference's numbers, each used at most as often
as given, with + − × ÷ and brackets, equal to its target; reference "TARGET from A, B, C").

A reward's components (each in [0, 1], one per response): "correct" (the extracted answer equals
the reference), "format" (an answer can be extracted in the asked format at all). The score is
Σ weight · component; every component is logged, weighted or not, with "no_answer" (1 where
nothing could be extracted).
"""

from __future__ import annotations

import ast
import math
import operator
import re
from fractions import Fraction
from typing import Callable, Mapping, Sequence

# A sign counts only where it cannot be a hyphen or an operator ("3-5", "x-1"); thousands
# commas only in groups of three not followed by another digit.
_NUMBER = re.compile(r"(?:(?<![\w.)\]])[-+])?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
                     r"|(?:(?<![\w.)\]])[-+])?\.\d+")


def normalize_number(text: str) -> str:
  """A number as one canonical string: '1,234.50' → '1234.5', '+07' → '7', '3.0' → '3'."""
  s = text.strip().rstrip(".").replace(",", "")
  try:
    value = Fraction(s)
  except (ValueError, ZeroDivisionError):
    return s
  if value.denominator == 1:
    return str(value.numerator)
  return format(float(value), ".12g")


def last_number(text: str) -> str | None:
  """The last number written in `text` (normalised), or None."""
  found = _NUMBER.findall(text)
  return normalize_number(found[-1]) if found else None


def boxed(text: str) -> str | None:
  r"""The content of the last `\boxed{...}` (or `\fbox{...}`), braces balanced, or None."""
  start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
  if start < 0:
    return None
  i = text.index("{", start) + 1
  depth = 1
  for j in range(i, len(text)):
    if text[j] == "{":
      depth += 1
    elif text[j] == "}":
      depth -= 1
      if depth == 0:
        return text[i:j].strip()
  return None  # unbalanced: no answer


def hash_answer(text: str) -> str | None:
  """What follows the last '####' on its line (GSM8K's format), numbers normalised; None if
  there is no '####' or nothing after it."""
  at = text.rfind("####")
  if at < 0:
    return None
  rest = text[at + 4:].split("\n", 1)[0].strip()
  if not rest:
    return None
  bare = rest.rstrip(".").lstrip("$").rstrip("%").strip()  # "$18", "25%"
  return normalize_number(bare) if _NUMBER.fullmatch(bare) else rest


def answer_tag(text: str) -> str | None:
  """The content of the last <answer>...</answer>, stripped, or None."""
  found = re.findall(r"<answer>(.*?)</answer>", text, flags=re.DOTALL)
  return found[-1].strip() if found and found[-1].strip() else None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "last_number": last_number, "boxed": boxed, "hash": hash_answer, "answer_tag": answer_tag}


def _number_value(s: str):
  s = s.strip().rstrip(".").replace(",", "")
  if s.startswith("\\frac{") or s.startswith("\\dfrac{"):  # \frac{a}{b}
    m = re.fullmatch(r"\\d?frac\{([^{}]+)\}\{([^{}]+)\}", s)
    s = f"{m.group(1)}/{m.group(2)}" if m else s
  try:
    return Fraction(s)
  except (ValueError, ZeroDivisionError):
    try:
      x = float(s)
    except ValueError:
      return None
    return x if math.isfinite(x) else None


def exact_equal(answer: str, reference: str) -> bool:
  norm = lambda s: " ".join(str(s).strip().casefold().split())
  return norm(answer) == norm(reference)


def numeric_equal(answer: str, reference: str, rel_tol: float = 1e-6) -> bool:
  a, b = _number_value(answer), _number_value(reference)
  if a is None or b is None:
    return exact_equal(answer, reference)
  return math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=1e-12)


def countdown_reference(target: int, numbers) -> str:
  """A countdown problem's reference: 'TARGET from A, B, C'."""
  return f"{target} from {', '.join(map(str, numbers))}"


OPERATIONS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
        ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv}


def countdown_equal(answer: str, reference: str) -> bool:
  """Whether expression `answer` uses only the reference's numbers (each at most once as often
  as given) and + − × ÷ and brackets, and equals its target exactly."""
  m = re.fullmatch(r"\s*(-?\d+) from ([\d, ]+)\s*", reference)
  if m is None:
    raise ValueError(f"countdown reference {reference!r} is not 'TARGET from A, B, C'.")
  target = int(m.group(1))
  available = [int(x) for x in m.group(2).split(",")]
  expression = answer.split("=")[0]
  try:
    tree = ast.parse(expression.replace("×", "*").replace("÷", "/"), mode="eval")
    used: list = []
    value = _evaluate(tree.body, used)
  except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
    return False
  for x in used:
    if x not in available:
      return False
    available.remove(x)
  return value == target


def _evaluate(node, used):
  if isinstance(node, ast.Constant) and isinstance(node.value, int) and node.value >= 0:
    used.append(node.value)
    return Fraction(node.value)
  if isinstance(node, ast.BinOp) and type(node.op) in OPERATIONS:
    return OPERATIONS[type(node.op)](_evaluate(node.left, used), _evaluate(node.right, used))
  raise ValueError("not an arithmetic expression over the numbers")


COMPARISONS: dict[str, Callable[[str, str], bool]] = {
    "exact": exact_equal, "numeric": numeric_equal, "countdown": countdown_equal}

COMPONENTS = ("correct", "format")


def extract(extractor: str, text: str) -> str | None:
  return _lookup(EXTRACTORS, "extractor", extractor)(text)


def equal(comparison: str, answer: str | None, reference) -> bool:
  if answer is None or reference is None:
    return False
  return bool(_lookup(COMPARISONS, "comparison", comparison)(answer, str(reference)))


def _lookup(table, what, name):
  if name not in table:
    raise ValueError(f"config.task.options.{what}: unknown {what} {name!r}; known: "
                     f"{', '.join(sorted(table))}.")
  return table[name]


def check_weights(weights: Mapping[str, float], components=COMPONENTS) -> dict:
  """`weights` as a plain dict of floats, or a ValueError naming a component nobody computes."""
  out = {}
  for name, w in dict(weights).items():
    if name not in components:
      raise ValueError(f"config.task.options.weights: no reward component {name!r}; the "
                       f"components: {', '.join(components)}.")
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
      raise ValueError(f"config.task.options.weights.{name} must be a finite number, got {w!r}.")
    out[name] = float(w)
  if not out:
    raise ValueError("config.task.options.weights: give at least one component a weight.")
  return out


class Verifier:
  """An extractor and a comparison: `judge(response, reference) -> (answer, correct)`."""

  def __init__(self, extractor: str = "last_number", comparison: str = "numeric"):
    self.extractor = extractor
    self.comparison = comparison
    self._extract = _lookup(EXTRACTORS, "extractor", extractor)
    _lookup(COMPARISONS, "comparison", comparison)

  def reference(self, reference):
    """A reference written in the extractor's own answer format (a GSM8K solution ending in
    '#### 72', one ending in \\boxed{...}) reduced to that answer; any other kept as it is."""
    if reference is None or self.extractor not in ("hash", "boxed"):
      return reference
    answer = self._extract(str(reference))
    return reference if answer is None else answer

  def judge(self, response: str, reference) -> tuple[str | None, bool]:
    answer = self._extract(response)
    return answer, equal(self.comparison, answer, self.reference(reference))

  def components(self, responses: Sequence[str], references: Sequence) -> dict:
    """Per response: "correct", "format" and "no_answer" (floats 0/1)."""
    if len(responses) != len(references):
      raise ValueError(f"Verifier.components: {len(responses)} responses, "
                       f"{len(references)} references.")
    correct, found = [], []
    for response, reference in zip(responses, references):
      answer, ok = self.judge(response, reference)
      correct.append(float(ok))
      found.append(float(answer is not None))
    return {"correct": correct, "format": found, "no_answer": [1.0 - f for f in found]}
