"""The package's layers, read from the source: no import points up a layer.

    core  <  text  <  policy, tasks  <  train  <  run  <  rlhf, lab, bench  <  reproduce

A module of `pg/<package>/` may import its own package and the packages of lower layers; two
packages of one layer do not import each other. `import pg` (the flat API) counts as core:
`pg/__init__.py` itself imports only `pg.core`. Run alone: `pytest tests/test_layers.py -v`.
"""

import ast
import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = {"core": 0, "text": 1, "policy": 2, "tasks": 2, "train": 3, "run": 4, "rlhf": 5,
          "lab": 5, "bench": 5, "reproduce": 6}
MODULES = sorted(glob.glob(os.path.join(ROOT, "pg", "**", "*.py"), recursive=True))


def package_of(path):
  parts = os.path.relpath(path, os.path.join(ROOT, "pg")).split(os.sep)
  return parts[0] if len(parts) > 1 else None  # None: pg/__init__.py


def imported_packages(path):
  """(line, package) for every `pg.<package>` a module imports, at any depth of its code;
  `import pg` / `from pg import <name>` of a non-package name count as "core"."""
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = ([f"{node.module}.{a.name}" for a in node.names] if node.module == "pg"
               else [node.module])
    else:
      continue
    for name in names:
      parts = name.split(".")
      if parts[0] != "pg":
        continue
      package = parts[1] if len(parts) > 1 and parts[1] in LAYERS else "core"
      found.append((node.lineno, package))
  return found


def test_every_module_lives_in_a_layer():
  stray = [os.path.relpath(p, ROOT) for p in MODULES
           if package_of(p) is None and os.path.basename(p) != "__init__.py"]
  assert not stray, f"modules outside the layer packages: {stray}"
  packages = {package_of(p) for p in MODULES} - {None}
  assert packages == set(LAYERS), packages ^ set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: os.path.relpath(p, ROOT))
def test_no_import_points_up_a_layer(path):
  mine = package_of(path)
  bad = []
  for line, other in imported_packages(path):
    if mine is None:  # pg/__init__.py: the flat API re-exports the core only
      ok = other == "core"
    else:
      ok = other == mine or LAYERS[other] < LAYERS[mine]
    if not ok:
      bad.append(f"line {line}: pg.{mine or '__init__'} imports pg.{other}")
  assert not bad, "\n".join(bad)


def test_the_checker_sees_an_upward_import(tmp_path):
  """The parse catches `from pg import train` inside a function, and `import pg.run.sweep`."""
  source = tmp_path / "m.py"
  source.write_text("import pg\nimport pg.run.sweep\n\ndef f():\n  from pg import train\n")
  assert imported_packages(str(source)) == [(1, "core"), (2, "run"), (5, "train")]


def test_experiment_scripts_are_thin():
  """experiments/ holds short scripts over library code (the research fork excepted)."""
  long = {}
  for path in glob.glob(os.path.join(ROOT, "experiments", "*.py")):
    n = len(open(path, encoding="utf-8").read().splitlines())
    if n > 100:
      long[os.path.basename(path)] = n
  assert not long, f"scripts over 100 lines (move the logic into pg/): {long}"
