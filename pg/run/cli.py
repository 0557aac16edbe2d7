"""The scripts' command line: a config flag that takes any dotted field, one-line errors, and
Ctrl-C that always exits cleanly.

    _CONFIG = cli.config_flag("configs/default.py")
    def main(argv): ...
    if __name__ == "__main__":
      cli.run(main)

- `--config.<field>=<value>` sets any field, `--config.task.options.<name>=<value>` too (a task's
  options are its factory's keyword arguments); a field no program reads is refused by
  `pg.run.schema` with the closest names, not by a 50-line AttributeError.
- An expected error (a bad config value, a missing or unwritable file, a full disk, a non-finite
  reward that stopped the run) prints one line, `error: ...`, and exits 1; `--debug` (or the
  environment variable PG_DEBUG=1) shows the traceback instead. Anything else, a bug, keeps its
  traceback.
- SIGINT / SIGTERM exit at once with status 130 outside the training loop (start-up,
  compilation, report), and after saving the chunk in flight inside it (`pg.run.interrupts`).
"""

from __future__ import annotations

import os
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from pg.run import interrupts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PG_DIR = os.path.join(ROOT, "pg")
DEBUG_ENV = "PG_DEBUG"
# Raised by pg's own checks with a message that names the field or path.
CHECKED = (ValueError, KeyError, TypeError, FloatingPointError, NotImplementedError)


def config_flag(default: str, help_string: str = "An ml_collections config file."):
  """`--config`: a config file whose fields `--config.a.b=value` overrides, new names included
  (they are then checked against the schema, so a misspelt one is refused with a hint)."""
  return config_flags.DEFINE_config_file("config", default, help_string, lock_config=False,
                                         accept_new_attributes=True)


def config_name() -> str:
  """The config file's name without extension ("default" for configs/default.py)."""
  path = config_flags.get_config_filename(flags.FLAGS["config"])
  return os.path.splitext(os.path.basename(path))[0]


def run(main):
  """`absl.app.run(main)` with the `--debug` flag, one-line errors and clean interrupts."""
  if "debug" not in flags.FLAGS:
    flags.DEFINE_bool("debug", False, f"Show tracebacks of expected errors (or {DEBUG_ENV}=1).")
  interrupts.install_exit_now()
  try:
    app.run(lambda argv: _guarded(main, argv))
  except (KeyError, AttributeError, ValueError, TypeError) as e:  # while parsing the flags
    if debugging():
      raise
    print(f"error: {_flag_error(e)} (--debug for the traceback)", file=sys.stderr, flush=True)
    sys.exit(2)


def debugging() -> bool:
  if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
    return True
  if flags.FLAGS.is_parsed():
    return bool(flags.FLAGS["debug"].value)
  return any(a in ("--debug", "-debug", "--debug=true", "--debug=1") for a in sys.argv[1:])


def _flag_error(e) -> str:
  """A config file's own error while the flags are read (a locked config refusing a new field,
  a missing file), without ml_collections' dump of every field."""
  text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
  text = str(text).split(" Other fields present:")[0]
  hint = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"\?', str(e))
  if hint:
    text += f'; did you mean "{hint.group(1)}"?'
  return " ".join(text.split())


def _guarded(main, argv):
  try:
    return main(argv)
  except KeyboardInterrupt:  # a run stopped by a signal (it said what it saved)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(interrupts.EXIT_STATUS)  # no teardown under live XLA threads
  except Exception as e:  # noqa: BLE001 - sorted below
    if debugging() or not expected(e):
      raise
    print(f"error: {one_line(e)} (--debug for the traceback)", file=sys.stderr, flush=True)
    sys.exit(1)


def expected(e: BaseException) -> bool:
  """An error a person fixes by changing an input: a file-system error, or one of pg's own
  checks (raised from a module of `pg/`), or a Python reward's error inside the step."""
  if isinstance(e, OSError):
    return True
  if _callback_error(e):
    return True
  if not isinstance(e, CHECKED):
    return False
  tb = e.__traceback__
  last = None
  while tb is not None:
    last = tb.tb_frame.f_code.co_filename
    tb = tb.tb_next
  return last is not None and os.path.abspath(last).startswith(PG_DIR + os.sep)


def _callback_error(e) -> str | None:
  """The line a host callback raised (e.g. a Python reward's "task 'x': reward_fn raised ..."),
  from inside the runtime error JAX wraps it in, or None."""
  if type(e).__name__ not in ("JaxRuntimeError", "XlaRuntimeError"):
    return None
  found = re.findall(r"^\w*(?:Error|Exception): (task .*)$", str(e), re.M)
  return found[-1] if found else None


def one_line(e: BaseException) -> str:
  missing = re.search(r"Failed loading config file.*No such file or directory: '([^']+)'", str(e),
                      re.S)
  if missing:
    return f"--config: no such config file: {missing.group(1)}"
  text = _callback_error(e)
  if text is None:
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    if isinstance(e, OSError) and e.strerror:  # not "[Errno 28] ..."
      text = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
  return " ".join(str(text).split())
