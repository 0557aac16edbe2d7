"""Marked numbers in the README and the config docstrings, filled from results.json's values.

Two spellings of one marker, KEY (a group, a dot, a field) naming an entry of
`pg.reproduce.values.derive`:

    <!-- result:KEY -->TEXT<!-- /result -->    markdown: the markers do not render
    ⟨KEY: TEXT⟩                                a docstring: the key stays readable

`fill` replaces each marker's TEXT (keeping the whitespace around it, so a table can sit on
lines of its own); `drift` lists the markers whose TEXT is not the value (whitespace aside: a
docstring may wrap a marker's text).
"""

from __future__ import annotations

import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY = r"[A-Za-z0-9_=-]+(?:\.[A-Za-z0-9_=-]+)+"  # a group, a dot, a field: `rlhf.beta_0.1.gold`
PATTERNS = (re.compile(rf"(<!-- result:(?P<key>{KEY}) -->)(?P<text>.*?)(<!-- /result -->)", re.S),
            re.compile(rf"(⟨(?P<key>{KEY}):\s)(?P<text>[^⟩]*)(⟩)"))


def marked_files(root: str = ROOT) -> list:
  """README.md and every config file: where marked numbers live."""
  return [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "configs",
                                                                          "*.py")))


def find(text: str) -> list:
  """(key, text) of every marker, in order."""
  found = []
  for pattern in PATTERNS:
    found += [(m.start(), m["key"], m["text"]) for m in pattern.finditer(text)]
  return [(key, value) for _, key, value in sorted(found)]


def _replace(match, values, missing):
  key, text = match["key"], match["text"]
  if key not in values:
    missing.append(key)
    return match[0]
  lead = text[:len(text) - len(text.lstrip())]
  trail = text[len(text.rstrip()):]
  return f"{match[1]}{lead}{values[key].strip()}{trail}{match[4]}"


def fill(text: str, values: dict) -> tuple[str, list]:
  """(text with every marker whose key has a value filled in, keys that have none)."""
  missing: list = []
  for pattern in PATTERNS:
    text = pattern.sub(lambda m: _replace(m, values, missing), text)
  return text, missing


def fill_files(values: dict, paths=None) -> dict:
  """Fills the markers of `paths` (default: `marked_files`) in place; {path: missing keys} for
  the files that name a key without a value."""
  missing = {}
  for path in paths or marked_files():
    with open(path, encoding="utf-8") as f:
      text = f.read()
    new, lacking = fill(text, values)
    if new != text:
      with open(path, "w", encoding="utf-8") as f:
        f.write(new)
    if lacking:
      missing[path] = lacking
  return missing


def drift(values: dict, paths=None) -> list:
  """(file, key, its text, the value or None) for every marker that disagrees with `values`."""
  out = []
  for path in paths or marked_files():
    for key, text in find(open(path, encoding="utf-8").read()):
      want = values.get(key)
      if want is None or text.split() != want.split():
        out.append((os.path.relpath(path, ROOT), key, text.strip(), want))
  return out
