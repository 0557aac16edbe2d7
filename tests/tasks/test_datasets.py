"""pg.tasks.datasets reads JSONL examples or refuses them naming the line, generates distinct
seeded prompts, and keeps held-out prompts out of training."""

import json
import re
import time

import pytest

from pg.tasks import generators
from pg.tasks.datasets import (Example, check_disjoint, check_references, generate, read_jsonl,
                               split)


def write(tmp_path, lines, name="data.jsonl"):
  path = tmp_path / name
  path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
  return str(path)


def test_read_jsonl_good_file(tmp_path):
  chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}]
  path = write(tmp_path, [
      json.dumps({"prompt": "What is 3 + 4?", "answer": "7"}),
      "",
      json.dumps({"prompt": chat, "answer": 4, "level": 2, "tags": ["easy"]}),
      "   ",
      json.dumps({"prompt": "Half of 5?", "answer": 2.5}),
      json.dumps({"prompt": "Say hi.", "id": "x"}),
  ])
  examples = read_jsonl(path)
  assert len(examples) == 4
  assert all(isinstance(e, Example) for e in examples)
  assert examples[0] == Example("What is 3 + 4?", "7", {}, f"{path}:1")
  assert examples[1].prompt == chat
  assert examples[1].reference == "4"                       # a number becomes a string
  assert examples[1].metadata == {"level": 2, "tags": ["easy"]}
  assert examples[1].source == f"{path}:3"                  # blank lines still count
  assert examples[2].reference == "2.5" and examples[2].source == f"{path}:5"
  assert examples[3].reference is None and examples[3].metadata == {"id": "x"}
  assert examples[3].source == f"{path}:6"


def test_read_jsonl_custom_keys(tmp_path):
  path = write(tmp_path, [json.dumps({"question": "Q?", "solution": "#### 3", "answer": "meta"})])
  (e,) = read_jsonl(path, prompt_key="question", reference_key="solution")
  assert e.prompt == "Q?" and e.reference == "#### 3" and e.metadata == {"answer": "meta"}


GOOD = json.dumps({"prompt": "ok", "answer": "1"})


@pytest.mark.parametrize("bad, fragment", [
    ('{"prompt": "x", "answer": ', "not valid JSON"),                       # malformed
    ('["prompt", "x"]', "JSON object"),                                    # a list
    ('"just a string"', "JSON object"),
    (json.dumps({"prompt": "   ", "answer": "1"}), "prompt is empty"),
    (json.dumps({"prompt": [], "answer": "1"}), "prompt"),                 # no messages
    (json.dumps({"prompt": [{"role": "user"}]}), "prompt"),                # no content
    (json.dumps({"prompt": [{"role": "user", "content": 3}]}), "prompt"),  # content not a str
    (json.dumps({"prompt": ["hello"]}), "prompt"),                         # not a dict
    (json.dumps({"prompt": 42}), "prompt"),
    (json.dumps({"prompt": "x", "answer": {"value": 1}}), "'answer'"),     # a dict reference
    (json.dumps({"prompt": "x", "answer": [1, 2]}), "'answer'"),
])
def test_read_jsonl_bad_line_named(tmp_path, bad, fragment):
  """Each refusal names the file and the line (here the third)."""
  path = write(tmp_path, [GOOD, GOOD, bad, GOOD])
  with pytest.raises(ValueError) as info:
    read_jsonl(path)
  message = str(info.value)
  assert f"{path}:3:" in message
  assert fragment in message


def test_read_jsonl_missing_prompt_key_names_key_and_option(tmp_path):
  path = write(tmp_path, [GOOD, json.dumps({"question": "x", "answer": "1"})])
  with pytest.raises(ValueError) as info:
    read_jsonl(path)
  message = str(info.value)
  assert f"{path}:2:" in message and "'prompt'" in message
  assert "config.task.options.prompt_key" in message and "question" in message
  path = write(tmp_path, [json.dumps({"prompt": "x"})], name="other.jsonl")
  with pytest.raises(ValueError, match=r"other\.jsonl:1: no 'query' field"):
    read_jsonl(path, prompt_key="query")


@pytest.mark.parametrize("lines", [[], ["", "   ", ""]])
def test_read_jsonl_empty_file(tmp_path, lines):
  path = write(tmp_path, lines)
  with pytest.raises(ValueError, match="no examples"):
    read_jsonl(path)


def test_read_jsonl_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.task.options.path"):
    read_jsonl(str(tmp_path / "absent.jsonl"))
  with pytest.raises(FileNotFoundError):
    read_jsonl(str(tmp_path))  # a directory is not a file


def test_example_key_is_canonical():
  """Identical prompts have identical keys, whatever the order of a message's fields."""
  a = Example([{"role": "user", "content": "hi"}])
  b = Example([{"content": "hi", "role": "user"}], reference="other")
  assert a.key() == b.key()
  assert Example("hi").key() != a.key()


# --- generate ----------------------------------------------------------------------------------

ARITHMETIC = generators.GENERATORS["arithmetic"][0]


def keys(examples):
  return [e.key() for e in examples]


def test_generate_distinct_and_seeded():
  a = generate(ARITHMETIC, 300, seed=0, name="arithmetic")
  assert len(a) == 300 and len(set(keys(a))) == 300
  assert [e.source for e in a] == [f"arithmetic #{i}" for i in range(300)]
  assert a == generate(ARITHMETIC, 300, seed=0, name="arithmetic")
  b = generate(ARITHMETIC, 300, seed=1, name="arithmetic")
  assert keys(a) != keys(b)


def test_generate_respects_exclude():
  first = generate(ARITHMETIC, 200, seed=0)
  excluded = set(keys(first))
  second = generate(ARITHMETIC, 200, seed=0, exclude=excluded)
  assert len(set(keys(second))) == 200
  assert not excluded & set(keys(second))


def three_prompts(rng):
  return Example(f"prompt {int(rng.integers(3))}", "0")


def test_generate_refuses_impossible_request_quickly():
  start = time.perf_counter()
  with pytest.raises(ValueError, match=r"tiny: only 3 distinct prompts.*10 asked for"):
    generate(three_prompts, 10, seed=0, name="tiny")
  with pytest.raises(ValueError, match="only 0 distinct prompts"):
    generate(three_prompts, 1, seed=0, name="tiny",
             exclude={Example(f"prompt {i}").key() for i in range(3)})
  assert time.perf_counter() - start < 2.0
  assert len(generate(three_prompts, 3, seed=0)) == 3  # exactly as many as exist is fine


# --- split -------------------------------------------------------------------------------------

def with_duplicates():
  """20 distinct prompts, prompt i given 1 + i % 3 times."""
  return [Example(f"q{i}", str(i), {}, f"row {i}.{j}") for i in range(20) for j in range(1 + i % 3)]


def test_split_is_disjoint_and_keeps_every_example():
  examples = with_duplicates()
  train, held = split(examples, num_heldout=6, seed=0)
  train_keys, held_keys = set(keys(train)), set(keys(held))
  assert len(held_keys) == 6 and len(train_keys) == 14
  assert not train_keys & held_keys
  # every copy of a prompt lands on the same side, and nothing is lost or invented
  assert sorted(e.source for e in train + held) == sorted(e.source for e in examples)
  for k in held_keys:
    assert sum(e.key() == k for e in held) == sum(e.key() == k for e in examples)
  # the order within each side is the input's
  assert train == [e for e in examples if e in train]
  assert held == [e for e in examples if e in held]


def test_split_is_seeded():
  examples = with_duplicates()
  assert split(examples, 6, seed=3) == split(examples, 6, seed=3)
  helds = {tuple(sorted(keys(split(examples, 6, seed=s)[1]))) for s in range(10)}
  assert len(helds) > 1


def test_split_zero_heldout_keeps_everything_for_training():
  examples = with_duplicates()
  assert split(examples, 0, seed=0) == (examples, [])


@pytest.mark.parametrize("num_heldout", [20, 21, -1, 2.0, "3"])
def test_split_refuses_bad_num_heldout(num_heldout):
  with pytest.raises(ValueError, match=r"config\.task\.options\.num_heldout"):
    split(with_duplicates(), num_heldout, seed=0)


# --- check_disjoint, check_references -----------------------------------------------------------

def test_check_disjoint():
  train = [Example("a", source="t:1"), Example("b", source="t:2"), Example("c", source="t:3")]
  held = [Example("b", source="h:1"), Example("d", source="h:2"), Example("a", source="h:3")]
  with pytest.raises(ValueError, match=re.escape("shares 2 of its 3 prompts")) as info:
    check_disjoint(train, held)
  assert "h:1" in str(info.value)  # the first shared example is named
  assert check_disjoint(train, [Example("d"), Example("e")]) is None
  assert check_disjoint(train, []) is None


def test_check_references():
  examples = [Example("a", "1", source="f:1"), Example("b", "2", source="f:2"),
              Example("a", "1", source="f:3"), Example("a", "9", source="f:7")]
  with pytest.raises(ValueError) as info:
    check_references(examples)
  message = str(info.value)
  assert "f:1" in message and "f:7" in message
  assert "'1'" in message and "'9'" in message
  assert check_references(examples[:3]) is None  # duplicates with equal references pass


def test_check_references_on_generated_data_with_duplicates_concatenated():
  examples = generate(ARITHMETIC, 50, seed=0)
  assert check_references(examples + examples) is None
