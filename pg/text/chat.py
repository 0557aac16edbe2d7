"""Chat templates: a model's Jinja template rendered the way transformers renders it.

A chat is a list of message dicts (`{"role": "user", "content": "..."}`). The template sees
`messages`, `add_generation_prompt`, `tools` and `documents` (None unless given), the model's
named special tokens (`bos_token`, `eos_token`, ...) and any extra keyword arguments, in a
sandboxed environment with transformers' settings (`utils/chat_template_utils.py`):
`trim_blocks`, `lstrip_blocks`, the `loopcontrols` extension, the `{% generation %}` block
(rendered as its body: transformers uses it only to mark assistant tokens), a `tojson` filter
that keeps non-ASCII text as is, and the globals `raise_exception` and `strftime_now`. Messages are
normalised first, as transformers does: keys whose value is None are dropped, and a message's
reasoning given as `reasoning_content`, `thinking` or `reasoning` is offered under the first two
names too. Each template compiles once.
"""

from __future__ import annotations

import datetime
import functools
import json

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox


class _Generation(jinja2.ext.Extension):
  """`{% generation %}...{% endgeneration %}`: renders its body."""
  tags = {"generation"}

  def parse(self, parser):
    lineno = next(parser.stream).lineno
    body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
    return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

  def _body(self, caller):
    return caller()


def _raise_exception(message):
  raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
  """Jinja's own `tojson` escapes HTML characters; templates expect plain JSON."""
  return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                    sort_keys=sort_keys)


_REASONING = ("reasoning_content", "thinking", "reasoning")


def _normalise(message):
  message = {k: v for k, v in message.items() if v is not None}
  reasoning = next((message[k] for k in _REASONING if k in message), None)
  if reasoning is not None:
    message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
  return message


def _strftime_now(format):
  return datetime.datetime.now().strftime(format)


@functools.lru_cache(maxsize=None)
def compile_template(template: str) -> jinja2.Template:
  """The compiled template, built once per distinct template string."""
  env = jinja2.sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, jinja2.ext.loopcontrols])
  env.filters["tojson"] = _tojson
  env.globals["raise_exception"] = _raise_exception
  env.globals["strftime_now"] = _strftime_now
  return env.from_string(template)


def render_chat(template: str, messages, *, add_generation_prompt: bool = True,
                tools=None, documents=None, **variables) -> str:
  """The chat `messages` rendered by `template` as one string (special tokens as text).

  Args:
    template: the Jinja chat template.
    messages: a list of message dicts, each with at least `role` and `content`.
    add_generation_prompt: end with the header that opens the assistant's turn.
    tools, documents: passed to the template as is (None unless given).
    **variables: more template variables: the special tokens (`bos_token`, ...) and any
      template-specific switch (e.g. `enable_thinking=False`).
  """
  if isinstance(messages, (str, dict)):
    raise TypeError(f"messages: a chat is a list of message dicts, got {type(messages).__name__}")
  chat = []
  for i, message in enumerate(messages):
    if not isinstance(message, dict):
      raise TypeError(f"messages[{i}]: a message is a dict, got {type(message).__name__}")
    chat.append(_normalise(message))
  return compile_template(template).render(
      messages=chat, tools=tools, documents=documents,
      add_generation_prompt=add_generation_prompt, **variables)
