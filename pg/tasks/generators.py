"""Procedural text problems: each generator is `fn(rng, **options) -> Example` with a reference
answer its verifier checks. Seeded through the NumPy generator it is given; no files, no
network.

- "arithmetic": "What is 7 + 12?" or a one-sentence word problem, with +, − or × on small
  numbers (answer: a number).
- "countdown": reach a target with +, −, ×, ÷ using each given number at most once (answer: an
  expression, checked by evaluating it; every instance is solvable by construction).
- "letter_count": how many times a letter occurs in an English word (answer: a number).
"""

from __future__ import annotations

from fractions import Fraction

from pg.tasks.datasets import Example
from pg.tasks.verifiers import OPERATIONS, countdown_reference

NAMES = ("Ana", "Ben", "Cleo", "Dev", "Emma", "Finn", "Gita", "Hugo", "Iris", "Jon", "Kai",
         "Lena", "Max", "Nora", "Omar", "Pia", "Raj", "Sara", "Tom", "Uma")
ITEMS = ("apple", "book", "card", "coin", "cookie", "egg", "marble", "pencil", "shell", "stamp",
         "sticker", "toy")
WORDS = ("apple", "banana", "strawberry", "letter", "balloon", "bookkeeper", "coffee",
         "committee", "mississippi", "address", "bottle", "butter", "cherry", "dinner",
         "engineer", "football", "giraffe", "grammar", "happiness", "hello", "kitten", "ladder",
         "lemon", "mammal", "millennium", "moon", "necessary", "occurrence", "office", "pepper",
         "pizza", "puppy", "rabbit", "raccoon", "referee", "rhythm", "school", "scissors",
         "success", "summer", "teeth", "tennis", "tomorrow", "tree", "umbrella", "village",
         "window", "yellow", "zebra", "parallel", "assessment", "banana", "cinnamon",
         "possession", "broccoli", "accommodate", "embarrass", "bubble", "pineapple", "level",
         "tattoo", "coconut", "diamond", "elephant", "freedom", "garden", "kangaroo", "llama",
         "programming", "sheep")


def arithmetic(rng, max_operand: int = 20, operations: str = "+-", style: str = "word",
               instruction: str = "Answer with just the number.") -> Example:
  """Style "word": 'Ana has 7 apples and gets 12 more. How many apples does Ana have now?';
  style "direct": 'What is 7 + 12?'. Operands in [1, max_operand] (a subtraction's result ≥ 0;
  × uses operands from 2 up to 10)."""
  if style not in ("word", "direct"):
    raise ValueError(f"config.task.options.style must be 'word' or 'direct', got {style!r}.")
  op = str(operations)[int(rng.integers(len(operations)))]
  name = NAMES[int(rng.integers(len(NAMES)))]
  item = ITEMS[int(rng.integers(len(ITEMS)))]
  a, b = (int(x) for x in rng.integers(1, max_operand + 1, size=2))
  if op == "-":
    a, b = max(a, b), min(a, b)
  elif op == "*":
    a, b = (int(x) for x in rng.integers(2, min(max_operand, 10) + 1, size=2))
  if style == "direct" and op in "+-*":
    answer = {"+": a + b, "-": a - b, "*": a * b}[op]
    return Example(f"What is {a} {op} {b}? {instruction}".strip(), str(answer),
                   {"a": a, "b": b, "op": op})
  if op == "+":
    text, answer = (f"{name} has {a} {item}s and gets {b} more. How many {item}s does {name} "
                    f"have now?"), a + b
  elif op == "-":
    text, answer = (f"{name} has {a} {item}s and gives {b} away. How many {item}s does {name} "
                    f"have left?"), a - b
  elif op == "*":
    text, answer = (f"{name} buys {a} bags with {b} {item}s in each bag. How many {item}s does "
                    f"{name} buy?"), a * b
  else:
    raise ValueError(f"config.task.options.operations: {operations!r}; use any of '+', '-', "
                     f"'*'.")
  prompt = f"{text} {instruction}".strip()
  return Example(prompt, str(answer), {"a": a, "b": b, "op": op})


def letter_count(rng, instruction: str = "Answer with just the number.") -> Example:
  """'How many times does the letter "r" appear in the word "strawberry"?' for a letter that
  occurs in the word (one time in three, one that does not)."""
  word = WORDS[int(rng.integers(len(WORDS)))]
  letters = sorted(set(word)) if rng.random() < 2 / 3 else sorted(
      set("abcdefghijklmnopqrstuvwxyz") - set(word))
  letter = letters[int(rng.integers(len(letters)))]
  prompt = (f'How many times does the letter "{letter}" appear in the word "{word}"? '
            f"{instruction}").strip()
  return Example(prompt, str(word.count(letter)), {"word": word, "letter": letter})


def countdown(rng, num_numbers: int = 3, max_number: int = 20,
              instruction: str = ("Show your work, then write only the expression inside "
                                  "<answer> </answer>, for example <answer>(1 + 2) * 3</answer>.")
              ) -> Example:
  """'Using the numbers 3, 5, 8 (each at most once) and + - * /, make 23.' The target is the
  value of a random expression over the numbers, a positive integer, so a solution exists."""
  while True:
    numbers = [int(x) for x in rng.integers(1, max_number + 1, size=num_numbers)]
    value = Fraction(numbers[0])
    for x in numbers[1:]:
      op = "+-*/"[int(rng.integers(4))]
      value = OPERATIONS[op](value, Fraction(x))
    if value.denominator == 1 and 0 < value <= 1000:
      break
  shown = sorted(numbers)
  prompt = (f"Using the numbers {', '.join(map(str, shown))} (each at most once) and +, -, *, /, "
            f"make {value.numerator}. {instruction}").strip()
  return Example(prompt, countdown_reference(value.numerator, shown),
                 {"target": value.numerator, "numbers": shown})


# name -> (generator, the extractor and comparison that check its answers)
GENERATORS = {
    "arithmetic": (arithmetic, "last_number", "numeric"),
    "letter_count": (letter_count, "last_number", "numeric"),
    "countdown": (countdown, "answer_tag", "countdown"),
}
