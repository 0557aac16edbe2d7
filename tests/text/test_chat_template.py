"""Chat templates render as transformers renders them: its Jinja settings, filters and globals,
the special tokens and extra variables, and its errors."""

import datetime

import jinja2
import pytest
from text_fixtures import CHATS, CHATML

from pg.text import compile_template, load_tokenizer, render_chat

# Leans on every setting transformers gives a template: trim_blocks and lstrip_blocks (the
# indented block tags), loopcontrols ({% break %}), tojson keeping non-ASCII text, namespace,
# raise_exception, the special tokens and an extra variable.
FEATURES = """{{ bos_token }}{% set ns = namespace(n=0) %}
{% for message in messages %}
    {% if message['role'] not in ['system', 'user', 'assistant'] %}
        {{ raise_exception('unknown role ' + message['role']) }}
    {% endif %}
    {% if loop.index > 3 %}{% break %}{% endif %}
    {% set ns.n = ns.n + 1 %}
    {{ message['role'] }}: {{ message['content'] | tojson }}
{% endfor %}
[{{ ns.n }} shown{% if note is defined %}, {{ note }}{% endif %}]
{% if add_generation_prompt %}assistant:{% endif %}{{ eos_token }}"""


def test_render_matches_a_hand_written_chatml():
  text = render_chat(CHATML, CHATS[1], add_generation_prompt=True)
  assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSum of 2 and 3?"
                  "<|im_end|>\n<|im_start|>assistant\n")
  assert render_chat(CHATML, CHATS[0], add_generation_prompt=False).startswith(
      "<|im_start|>system\nYou are a tiny helpful model.<|im_end|>\n<|im_start|>user\nHi there")


def test_settings_filters_and_variables():
  chat = [{"role": "system", "content": "Be brief."},
          {"role": "user", "content": 'ünïcode "quoted"', "name": None},
          {"role": "assistant", "content": "5"}, {"role": "user", "content": "cut off"}]
  text = render_chat(FEATURES, chat, bos_token="<B>", eos_token="<E>", note="x")
  assert text == ('<B>    system: "Be brief."\n    user: "ünïcode \\"quoted\\""\n'
                  '    assistant: "5"\n[3 shown, x]\nassistant:<E>')
  assert render_chat("{{ strftime_now('%Y') }}", []) == str(datetime.datetime.now().year)
  assert render_chat("{{ tools is none and documents is none }}", []) == "True"
  assert render_chat("a{% generation %}{{ 1 + 1 }}{% endgeneration %}b", []) == "a2b"
  none_dropped = render_chat("{{ messages[0] | tojson }}", [{"role": "user", "name": None}])
  assert none_dropped == '{"role": "user"}'  # as transformers: None values leave the message
  reasoning = render_chat("{{ messages[0]['reasoning_content'] }}{{ messages[0]['thinking'] }}",
                          [{"role": "assistant", "reasoning": "r", "thinking": None}])
  assert reasoning == "rr"


def test_template_errors_and_the_sandbox():
  with pytest.raises(jinja2.exceptions.TemplateError, match="unknown role tool"):
    render_chat(FEATURES, [{"role": "tool", "content": "x"}])
  with pytest.raises(jinja2.exceptions.SecurityError):
    render_chat("{{ messages.append(1) }}", [])  # immutable: templates cannot edit the chat
  with pytest.raises(TypeError, match=r"messages\[1\]"):
    render_chat(CHATML, [{"role": "user", "content": "a"}, "b"])


def test_each_template_compiles_once():
  assert compile_template(CHATML) is compile_template(CHATML)


def test_a_model_without_a_template_names_its_path(make_model_dir):
  directory = make_model_dir(config={"chat_template": ...})
  tok = load_tokenizer(directory)
  assert tok.chat_template is None
  with pytest.raises(ValueError, match=f"{directory}: this tokenizer has no chat template"):
    tok.apply_chat_template(CHATS[0])
  with pytest.raises(ValueError, match="no chat template"):
    tok.encode_chat(CHATS[0])


# The messages as the template sees them, after transformers' normalisation.
AS_JSON = ("{{ messages | tojson }}{% generation %}{{ add_generation_prompt }}{% endgeneration %}"
           "{{ tools }}")
REASONING_CHAT = [{"role": "user", "content": "q"},
                  {"role": "assistant", "content": "a", "reasoning": "because", "name": None}]


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("template", [CHATML, FEATURES, AS_JSON], ids=["chatml", "features",
                                                                       "json"])
def test_renders_and_ids_equal_transformers(auto_tokenizer, make_model_dir, template,
                                            add_generation_prompt):
  directory = make_model_dir(config={"chat_template": template, "bos_token": "<|im_start|>"})
  ours, theirs = load_tokenizer(directory), auto_tokenizer.from_pretrained(str(directory))
  for chat in CHATS + [REASONING_CHAT]:
    kwargs = dict(add_generation_prompt=add_generation_prompt, note="n")
    expected = theirs.apply_chat_template(chat, tokenize=False, **kwargs)
    assert ours.apply_chat_template(chat, **kwargs) == expected
    ids = theirs.apply_chat_template(chat, tokenize=True, return_dict=True, **kwargs)
    assert ours.encode_chat(chat, **kwargs) == ids["input_ids"]
