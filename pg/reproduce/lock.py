"""requirements.lock: every package `pip install -e .` and its test extra install, pinned.

    python -m pg.reproduce.lock            # rewrite requirements.lock from this environment
    python -m pg.reproduce.lock --check    # exit 1 if the lock and this environment differ

setup.py keeps what pg needs as ranges (`REQUIRES`, and `EXTRAS`: {extra: ranges}) and
installs the lock's lines instead (`locked(section)`), so the README's install commands get the
versions the numbers in reports/results.md were made with. The lock is the closure of those
ranges over the installed distributions' metadata (their extras and environment markers
followed, for this Python and platform): section "install" for `REQUIRES`, one section per
extra for what it adds. A line is `name==version  # via who needs it`; a section starts at
`# section: <name>`, so `pip install -r requirements.lock` reads it too.
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import sys
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCK = os.path.join(ROOT, "requirements.lock")
SETUP = os.path.join(ROOT, "setup.py")
HEADER = """\
# requirements.lock: the exact versions that `pip install -e .` (section install) and
# `pip install -e ".[extra]"` (that section too) install; setup.py reads this file.
# Generated from the installed environment ({python}, {system}) by:
#     python -m pg.reproduce.lock
# Rerun it after changing REQUIRES / EXTRAS in setup.py or upgrading a package, then
# rerun `python experiments/reproduce.py`: the README's numbers were made with these versions.
"""


def locked(path: str = LOCK, section: str = "install") -> list[str]:
  """The `name==version` lines of one section of the lock (setup.py holds the same function)."""
  lines, current = [], None
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.startswith("# section:"):
        current = line.split(":", 1)[1].strip()
        continue
      line = line.split("#", 1)[0].strip()
      if line and current == section:
        lines.append(line)
  return lines


def setup_ranges(path: str = SETUP) -> dict:
  """{"install": REQUIRES, extra: its ranges for each of EXTRAS}: setup.py's module-level
  literals, read without running it."""
  found = {}
  for node in ast.parse(open(path, encoding="utf-8").read(), path).body:
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
      name = getattr(node.targets[0], "id", None)
      if name in ("REQUIRES", "EXTRAS"):
        found[name] = ast.literal_eval(node.value)
  missing = {"REQUIRES", "EXTRAS"} - set(found)
  if missing:
    raise ValueError(f"{path} defines no module-level {sorted(missing)} (the ranges the lock "
                     f"is generated from: a list, and a dict of extra -> list).")
  return {"install": found["REQUIRES"], **found["EXTRAS"]}


def closure(requirements, environment=None) -> dict:
  """Canonical name -> (name, version, sorted names of what needs it) for `requirements` and
  everything they need, over the installed distributions. Raises if one is not installed or
  its installed version is outside a range that asks for it."""
  env = dict(environment or default_environment())
  found: dict = {}
  seen = set()
  todo = [(Requirement(r), "setup.py") for r in requirements]
  while todo:
    req, parent = todo.pop()
    key = canonicalize_name(req.name)
    try:
      dist = metadata.distribution(req.name)
    except metadata.PackageNotFoundError:
      raise LookupError(f"{req.name}, needed by {parent}, is not installed: install it first "
                        f"(pip install -e \".[test]\") and regenerate the lock.") from None
    if not req.specifier.contains(dist.version, prereleases=True):
      raise ValueError(f"{dist.metadata['Name']} {dist.version} is installed, but {parent} "
                       f"asks for {req}.")
    # A local build label (torch's "+cpu") names no release an index serves: pin the release.
    name, version, parents = found.get(key, (dist.metadata["Name"],
                                             dist.version.split("+")[0], set()))
    if canonicalize_name(parent) != key:
      parents.add(parent)
    found[key] = (name, version, parents)
    for extra in sorted(req.extras) or [""]:
      if (key, extra) in seen:
        continue
      seen.add((key, extra))
      for line in dist.requires or []:
        sub = Requirement(line)
        if sub.marker is None or sub.marker.evaluate({**env, "extra": extra}):
          todo.append((sub, name))
  return {k: (n, v, sorted(p)) for k, (n, v, p) in found.items()}


def sections(ranges: dict) -> dict:
  """{"install": closure of the install ranges, extra: what its ranges add to it, ...}."""
  install = closure(ranges["install"])
  out = {"install": install}
  for extra, extra_ranges in ranges.items():
    if extra != "install":
      both = closure(ranges["install"] + extra_ranges)
      out[extra] = {k: v for k, v in both.items() if k not in install}
  return out


def render(pinned: dict) -> str:
  """The lock's text from `sections`' output."""
  out = [HEADER.format(python=f"Python {platform.python_version()}",
                       system=f"{platform.system()} {platform.machine()}")]
  for section, packages in pinned.items():
    out.append(f"# section: {section}")
    for _, (name, version, parents) in sorted(packages.items()):
      out.append(f"{name}=={version}  # via {', '.join(parents)}")
    out.append("")
  return "\n".join(out)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true",
                      help="compare with requirements.lock instead of writing it")
  parser.add_argument("--setup", default=SETUP)
  parser.add_argument("--lock", default=LOCK)
  args = parser.parse_args(argv)
  pinned = sections(setup_ranges(args.setup))
  if args.check:
    want = {s: [f"{n}=={v}" for _, (n, v, _) in sorted(p.items())] for s, p in pinned.items()}
    have = {s: locked(args.lock, s) for s in pinned}
    if want != have:
      print(f"{args.lock} differs from this environment: {have} != {want}")
      sys.exit(1)
    print(f"{args.lock} matches this environment.")
    return
  with open(args.lock, "w", encoding="utf-8") as f:
    f.write(render(pinned))
  print(f"wrote {args.lock}: " + ", ".join(f"{len(p)} packages in section {s}"
                                           for s, p in pinned.items()))


if __name__ == "__main__":
  main()
