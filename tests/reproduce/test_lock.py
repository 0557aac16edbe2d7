"""requirements.lock pins every package pg and its test extra install, and setup.py installs
exactly its lines (the README's install commands go through setup.py)."""

import os
from unittest import mock

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pg.reproduce import lock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def setup_kwargs(path=lock.SETUP):
  """The keyword arguments setup.py hands to `setuptools.setup`, without installing."""
  captured = {}
  source = open(path, encoding="utf-8").read()
  with mock.patch("setuptools.setup", lambda **kw: captured.update(kw)):
    exec(compile(source, path, "exec"), {"__file__": path, "__name__": "__main__"})  # noqa: S102
  return captured


def pins(lines):
  return {canonicalize_name(Requirement(line).name): str(Requirement(line).specifier)
          for line in lines}


def sections_of_the_lock():
  return [line.split(":", 1)[1].strip() for line in open(lock.LOCK, encoding="utf-8")
          if line.startswith("# section:")]


def test_every_line_of_the_lock_is_an_exact_pin():
  names = sections_of_the_lock()
  assert names[0] == "install" and "test" in names, names
  install = pins(lock.locked(section="install"))
  for section in names:
    lines = lock.locked(section=section)
    assert lines, f"requirements.lock's section {section!r} is empty"
    for line in lines:
      (spec,) = Requirement(line).specifier
      assert spec.operator == "==", line
    if section != "install":
      assert not set(install) & set(pins(lines)), f"{section} repeats a package of install"


def test_the_lock_covers_every_requirement_and_what_it_pulls_in():
  """The closure of setup.py's ranges over the installed metadata is exactly the lock, at the
  installed versions: nothing missing, nothing stale, nothing extra."""
  ranges = lock.setup_ranges()
  assert list(ranges) == sections_of_the_lock()
  installed = {}
  for extra in ranges:  # an extra this environment did not install is checked where it is
    try:
      lock.closure(ranges[extra])
      installed[extra] = ranges[extra]
    except LookupError:
      assert extra not in ("install", "test"), extra
  wanted = lock.sections(installed)
  for section in wanted:
    have = pins(lock.locked(section=section))
    want = {k: f"=={v}" for k, (_, v, _) in wanted[section].items()}
    assert have == want, (f"section {section}: regenerate with python -m pg.reproduce.lock "
                          f"(missing {sorted(set(want) - set(have))}, extra "
                          f"{sorted(set(have) - set(want))}, differing "
                          f"{sorted(k for k in set(have) & set(want) if have[k] != want[k])})")


def test_setup_installs_exactly_the_locked_versions():
  kwargs = setup_kwargs()
  ranges_by_section = lock.setup_ranges()
  assert kwargs["install_requires"] == lock.locked(section="install")
  assert set(kwargs["extras_require"]) == set(ranges_by_section) - {"install"}
  locked = {}
  for extra, lines in kwargs["extras_require"].items():
    assert lines == lock.locked(section=extra), extra
    locked.update(pins(lines))
  locked.update(pins(kwargs["install_requires"]))
  for section, ranges in ranges_by_section.items():
    for line in ranges:
      req = Requirement(line)
      version = locked[canonicalize_name(req.name)][2:]
      assert req.specifier.contains(version), f"{section}: the lock's {req.name} {version} " \
                                              f"is outside setup.py's {line}"


def test_the_reader_takes_one_section_and_skips_comments(tmp_path):
  path = tmp_path / "requirements.lock"
  path.write_text("# header\n# section: install\na==1  # via b\n\n# section: test\nc==2\n")
  assert lock.locked(str(path), "install") == ["a==1"]
  assert lock.locked(str(path), "test") == ["c==2"]


def test_a_missing_package_is_named():
  with pytest.raises(LookupError, match="not-a-real-package-xyz"):
    lock.closure(["not-a-real-package-xyz>=1"])
