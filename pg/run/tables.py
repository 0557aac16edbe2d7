"""Markdown tables: the one helper every report, results file and benchmark prints with."""

from __future__ import annotations

from typing import Iterable, Sequence


def markdown_table(header: Sequence, rows: Iterable[Sequence]) -> str:
  """A GitHub markdown table: one header row, a rule, then one line per row (cells by `str`)."""
  header = [str(h) for h in header]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in rows:
    cells = [str(c) for c in row]
    if len(cells) != len(header):
      raise ValueError(f"markdown_table: a row has {len(cells)} cells for {len(header)} "
                       f"columns: {cells}.")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)
