"""The registered text tasks: procedural generators ("arithmetic", "letter_count", "countdown")
and any JSONL file ("jsonl"), each scored by a verifier.

Options every text task takes (`config.task.options.<name>`):

    tokenizer          a model directory or .gguf; "" = the model's (config.model.init_from)
    num_heldout        held-out problems (split off by split_seed; identical prompts together)
    split_seed         the generator's and the split's seed
    max_new_tokens     T, response slots
    chat, system_prompt  render prompts through the chat template (when the tokenizer has one)
    max_prompt_tokens  P; 0 = the longest prompt (a longer prompt is refused)
    extractor, comparison  how answers are read and compared (pg.tasks.verifiers)
    correct_weight, format_weight  the reward: w_c · correct + w_f · format

Generators also take `num_train` and their own options (e.g. arithmetic's `max_operand`);
"jsonl" takes `path`, `heldout_path` (a separate held-out file, which must not share prompts
with the training file; "" = split `num_heldout` off `path`), `prompt_key`, `reference_key`.
"""

from __future__ import annotations

import functools
import inspect

from pg import text as text_lib
from pg.tasks import datasets, generators
from pg.tasks.base import register_task
from pg.tasks.text import text_task
from pg.tasks.verifiers import Verifier

COMMON = {"tokenizer": "", "num_heldout": 100, "split_seed": 0, "max_new_tokens": 32,
          "chat": True, "system_prompt": "", "max_prompt_tokens": 0, "correct_weight": 1.0,
          "format_weight": 0.0}


def _build(name, train, heldout, o) -> "Task":
  if not isinstance(o["max_new_tokens"], int) or o["max_new_tokens"] < 1:
    raise ValueError(f"config.task.options.max_new_tokens must be a positive int, got "
                     f"{o['max_new_tokens']!r}.")
  if not isinstance(o["max_prompt_tokens"], int) or o["max_prompt_tokens"] < 0:
    raise ValueError(f"config.task.options.max_prompt_tokens must be an int >= 0 (0: the "
                     f"longest prompt), got {o['max_prompt_tokens']!r}.")
  if not o["tokenizer"]:
    raise ValueError(f"config.task.options.tokenizer: task {name!r} needs the model's tokenizer "
                     f"(a model directory or .gguf), or config.model.init_from to take it from.")
  tokenizer = text_lib.load_tokenizer(o["tokenizer"])
  return text_task(
      name, train, heldout, tokenizer, max_new_tokens=o["max_new_tokens"],
      verifier=Verifier(o["extractor"], o["comparison"]),
      weights={"correct": o["correct_weight"], "format": o["format_weight"]}, chat=o["chat"],
      system_prompt=o["system_prompt"], max_prompt_tokens=o["max_prompt_tokens"] or None)


def _register_generator(name):
  generator, extractor, comparison = generators.GENERATORS[name]
  own = {p.name: p.default for p in list(inspect.signature(generator).parameters.values())[1:]}
  defaults = {**COMMON, "num_train": 2000, **own, "extractor": extractor,
              "comparison": comparison}

  def factory(**options):
    o = {**defaults, **options}
    gen = functools.partial(generator, **{k: o[k] for k in own})
    if not isinstance(o["num_train"], int) or o["num_train"] < 1:
      raise ValueError(f"config.task.options.num_train must be a positive int, got "
                       f"{o['num_train']!r}.")
    examples = datasets.generate(gen, o["num_train"] + o["num_heldout"], o["split_seed"], name)
    train, heldout = datasets.split(examples, o["num_heldout"], o["split_seed"])
    return _build(name, train, heldout, o)

  factory.__signature__ = _signature(defaults)
  factory.__name__ = name
  factory.__doc__ = (f"{generator.__doc__}\n\nText task options: see pg.tasks.text_builtin.")
  register_task(name)(factory)


def _signature(defaults):
  return inspect.Signature([inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
                            for k, v in defaults.items()])


for _name in generators.GENERATORS:
  _register_generator(_name)


JSONL_DEFAULTS = {**COMMON, "path": "", "heldout_path": "", "prompt_key": "prompt",
                  "reference_key": "answer", "extractor": "last_number", "comparison": "numeric"}


def jsonl(**options):
  """Prompts and reference answers from a JSONL file (`pg.tasks.datasets.read_jsonl`)."""
  o = {**JSONL_DEFAULTS, **options}
  if not o["path"]:
    raise ValueError("config.task.options.path: task 'jsonl' needs the path of a .jsonl file.")
  examples = datasets.read_jsonl(o["path"], o["prompt_key"], o["reference_key"])
  if o["heldout_path"]:
    train = examples
    heldout = datasets.read_jsonl(o["heldout_path"], o["prompt_key"], o["reference_key"])
  else:
    train, heldout = datasets.split(examples, o["num_heldout"], o["split_seed"])
  return _build("jsonl", train, heldout, o)


jsonl.__signature__ = _signature(JSONL_DEFAULTS)
register_task("jsonl")(jsonl)
