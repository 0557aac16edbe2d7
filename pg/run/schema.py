"""Every field a config sets is one a program reads: a misspelt field is refused, not ignored.

The schema of a config is the base config's fields (`pg.run.configs.base_config`, with the
hyperparameters its `config.imports` declare), the options of the task it names
(`config.task.options.<name>`, the task factory's keyword arguments), the options of the model it
names (`config.model.<name>`, the policy registration's options) and the blocks a pipeline
declares (e.g. the RLHF pipeline's `rlhf` block). `check(config, blocks)` raises one line naming
the first unknown field and the closest valid ones, before anything is built or compiled:

    config.num_promts is not a field pg reads; did you mean config.num_prompts?
    config.lerning_rate is not a field pg reads; did you mean config.hparams.learning_rate?
"""

from __future__ import annotations

import difflib

from pg.policy import POLICIES
from pg.run.configs import base_config
from pg.tasks import base as tasks

# Fields whose value is free-form: no field below them is checked.
OPEN = ("imports",)


def leaves(tree, prefix="") -> dict:
  """{dotted path: value} for every leaf of a (nested) ConfigDict or dict."""
  out = {}
  for key in tree.keys():
    value = tree[key]
    path = f"{prefix}{key}"
    if hasattr(value, "keys") and callable(value.keys):
      inner = leaves(value, path + ".")
      out.update(inner or {path: value})
    else:
      out[path] = value
  return out


def valid_fields(config, blocks=None) -> set:
  """The dotted paths `config` may set: the base config's, its task's and model's options, and
  the fields of each pipeline block in `blocks` ({name: dict of field -> default})."""
  imports = tuple(config.get("imports", ()) or ())
  base = base_config(imports)
  fields = {p for p in leaves(base) if not p.startswith(("task.options", "model."))}
  fields |= {"task.options", "model.name"}
  task = config.get("task") or {}
  if task.get("name") in tasks.TASKS:
    fields |= {f"task.options.{name}" for name in tasks.task_options(task["name"])}
  model_name = (config.get("model") or {}).get("name", "gpt")
  if model_name in POLICIES:
    fields |= {f"model.{name}" for name in POLICIES[model_name].options}
  for name, block in (blocks or {}).items():
    fields |= {f"{name}.{field}" for field in leaves(block)}
  return fields


def unknown_fields(config, blocks=None, valid=None) -> list:
  """The dotted paths `config` sets that no program reads, in the config's order (`valid`:
  the allowed paths, default `valid_fields(config, blocks)`)."""
  valid = valid_fields(config, blocks) if valid is None else valid
  out = []
  for path in leaves(config):
    if path in valid or path.startswith(OPEN):
      continue
    # An empty block (`task.options = {}`) is a leaf; an empty sweep tuple is refused elsewhere.
    if any(v.startswith(path + ".") for v in valid):
      continue
    out.append(path)
  return out


def suggestions(path: str, valid, n: int = 3) -> list:
  """The valid dotted paths closest to `path`: by the whole path, then by its last name (so a
  hyperparameter set at the top level finds `hparams.<name>`)."""
  blocks = {v.rsplit(".", 1)[0] for v in valid if "." in v}
  valid = sorted(v for v in valid if v not in blocks
                 and (path.startswith("sweep.") or not v.startswith("sweep.")))
  close = difflib.get_close_matches(path, valid, n=n, cutoff=0.75)
  by_leaf = {}
  for v in valid:
    by_leaf.setdefault(v.rsplit(".", 1)[-1], []).append(v)
  leaf = path.rsplit(".", 1)[-1]
  for name in difflib.get_close_matches(leaf, list(by_leaf), n=n, cutoff=0.75):
    close += [v for v in by_leaf[name] if v not in close]
  for name in by_leaf:  # one name extends the other: advantage_estimator, advantage
    if leaf.startswith(name + "_") or name.startswith(leaf + "_"):
      close += [v for v in by_leaf[name] if v not in close]
  return close[:n]


def check(config, blocks=None) -> None:
  """Raises KeyError (one line) naming the first field `config` sets that no program reads,
  with the closest valid fields; `blocks` are the pipeline blocks the caller reads."""
  valid = valid_fields(config, blocks)
  unknown = unknown_fields(config, valid=valid)
  if unknown:
    raise KeyError(_message(config, unknown, valid))


def check_against(config, reference) -> None:
  """Like `check`, for a program with a config of its own: every field of `config` must be one
  of `reference`'s (its default config)."""
  valid = set(leaves(reference))
  unknown = unknown_fields(config, valid=valid)
  if unknown:
    raise KeyError(_message(config, unknown, valid))


def _message(config, unknown, valid) -> str:
  path = unknown[0]
  top = path.split(".")[0]
  if top not in {v.split(".")[0] for v in valid}:  # a whole block nobody reads
    unknown = list(dict.fromkeys(p.split(".")[0] for p in unknown))
    path = top
  near = suggestions(path, valid)
  if path.startswith("task.options.") and config.task.name in tasks.TASKS:
    options = sorted(tasks.task_options(config.task.name))
    hint = (f"task {config.task.name!r} takes options {options}" if options
            else f"task {config.task.name!r} takes no options")
    hint += f"; did you mean {' or '.join('config.' + s for s in near)}?" if near else "."
  elif near:
    hint = f"did you mean {' or '.join('config.' + s for s in near)}?"
  else:
    top = sorted({v.split('.')[0] for v in valid})
    hint = f"the top-level fields are {', '.join(top)}."
  more = f" ({len(unknown) - 1} more unknown: {unknown[1:4]})" if len(unknown) > 1 else ""
  return f"config.{path} is not a field pg reads (misspelt?); {hint}{more}"
