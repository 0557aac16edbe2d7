"""Text tasks on a real tokenizer (the repository's tiny Llama fixture): prompts rendered with the
chat template and left-padded, the batched reward called once per update with decoded text, its
components logged, and bad rewards and inputs refused by name."""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pg import tasks, text, train
from pg.tasks import Example, Verifier, text_task
from tiny_config import run_chunks, tiny

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "hf", "llama")
LLAMA = {"name": "llama", "num_layers": 1, "d_model": 32, "num_heads": 2, "num_kv_heads": 1,
         "mlp_dim": 64, "value_head": "none"}


@pytest.fixture(scope="module")
def tok():
  return text.load_tokenizer(FIXTURE)


def examples(n, start=0):
  return [Example(f"What is {i} + 1? Answer with a number.", str(i + 1), source=f"ex {i}")
          for i in range(start, start + n)]


def test_prompts_are_the_chat_template_left_padded(tok):
  """Each table row is the chat-rendered prompt's ids right-aligned; the mask marks exactly
  them, and decode_prompt gives the rendered text back."""
  train_ex = examples(3) + [Example([{"role": "user", "content": "Hi"}], "1", source="chat")]
  task = text_task("t", train_ex, [], tok, max_new_tokens=4, verifier=Verifier())
  prompts = np.asarray(task.sample_prompts(jax.random.PRNGKey(0), 64))
  mask = np.asarray(task.prompt_mask(jnp.asarray(prompts)))
  rendered = [tok.encode_chat([{"role": "user", "content": e.prompt}]) if isinstance(e.prompt, str)
              else tok.encode_chat(e.prompt) for e in train_ex]
  assert task.prompt_len == max(len(r) for r in rendered)
  for row, m in zip(prompts, mask):
    ids = list(row[m > 0])
    assert ids in rendered
    assert np.all(m[:len(row) - len(ids)] == 0) and np.all(row[m == 0] == task.prompt_pad_id)
  assert task.eos_id in tok.eos_ids and set(task.stop_ids) == set(tok.eos_ids)
  assert "What is 0 + 1?" in task.decode_prompt(jnp.asarray(tok.encode_chat(
      [{"role": "user", "content": train_ex[0].prompt}])))


def test_a_system_prompt_and_plain_text_prompts(tok):
  sys_task = text_task("t", examples(2), [], tok, max_new_tokens=4, verifier=Verifier(),
                       system_prompt="Be brief.")
  plain = text_task("t", examples(2), [], tok, max_new_tokens=4, verifier=Verifier(), chat=False)
  row = np.asarray(sys_task.sample_prompts(jax.random.PRNGKey(1), 1))[0]
  assert "Be brief." in tok.decode([int(t) for t in row])
  row = np.asarray(plain.sample_prompts(jax.random.PRNGKey(1), 1))[0]
  m = np.asarray(plain.prompt_mask(jnp.asarray(row[None])))[0] > 0
  assert list(row[m]) in [tok.encode(e.prompt) for e in examples(2)]


def counting_reward(calls):
  def reward(prompts, responses, references):
    calls.append((list(prompts), list(responses), list(references)))
    return {"right": [float(r == ref) for r, ref in zip(responses, references)],
            "short": [float(len(r) < 5) for r in responses]}
  return reward


def test_the_reward_is_called_once_for_every_row_of_every_run(tok):
  """Under vmap over runs and jit, one host call sees all R·B rows, with the decoded response
  (up to its end token) and each prompt's own reference; the score is the weighted sum and the
  components come back one by one."""
  calls = []
  task = text_task("t", examples(5), [], tok, max_new_tokens=6, reward=counting_reward(calls),
                   weights={"right": 1.0, "short": 0.5})
  R, B = 2, 3
  prompts = jnp.stack([task.sample_prompts(jax.random.PRNGKey(r), B) for r in range(R)])
  answer = tok.encode("4")
  eos = task.eos_id
  tokens = np.full((R, B, 6), eos, np.int32)
  tokens[:, :, :len(answer)] = answer
  tokens[0, 0, len(answer)] = tok.encode("x")[0]  # row (0, 0) does not end after "4"
  mask = np.zeros((R, B, 6), np.float32)
  mask[:, :, :len(answer) + 1] = 1
  mask[0, 0, :] = 1
  scores, parts = jax.jit(jax.vmap(task.score_parts))(prompts, jnp.asarray(tokens),
                                                      jnp.asarray(mask))
  assert len(calls) == 1 and len(calls[0][1]) == R * B
  _, responses, references = calls[0]
  assert responses[1] == "4" and responses[0].startswith("4") and responses[0] != "4"
  flat_prompts = np.asarray(prompts).reshape(R * B, -1)
  for row, ref in zip(flat_prompts, references):
    assert f"What is {int(ref) - 1} + 1?" in task.decode_prompt(row)
  right = np.array([float(r == ref) for r, ref in zip(responses, references)]).reshape(R, B)
  short = np.array([float(len(r) < 5) for r in responses]).reshape(R, B)
  np.testing.assert_allclose(parts["right"], right)
  np.testing.assert_allclose(parts["short"], short)
  np.testing.assert_allclose(scores, right + 0.5 * short)


def score_once(task, tok):
  prompts = task.sample_prompts(jax.random.PRNGKey(0), 2)
  tokens = jnp.asarray([tok.encode("12") + [task.eos_id]] * 2, jnp.int32)
  return jax.jit(task.score)(prompts, tokens, jnp.ones(tokens.shape, jnp.float32))


@pytest.mark.parametrize("reward, match", [
    (lambda p, r, ref: [1 / 0 if "3 +" in q else 1.0 for q in p],
     r"raised ZeroDivisionError: division by zero for prompt '[^']*What is 3 \+ 1\?"
     r"[^']*' and response '12'"),
    (lambda p, r, ref: [1.0], r"returned 1 scores for 2 responses"),
    (lambda p, r, ref: ["good"] * len(r), r"returned scores that are not numbers"),
    (lambda p, r, ref: 1.0, r"returned a scalar scores for 2 responses"),
])
def test_a_bad_reward_is_named_with_its_prompt_and_response(tok, reward, match):
  task = text_task("bad", [examples(5)[3]], [], tok, max_new_tokens=4, reward=reward)
  with pytest.raises(Exception, match=r"task 'bad': the reward " + match):
    jax.block_until_ready(score_once(task, tok))


def test_a_components_reward_must_match_its_weights(tok):
  reward = lambda p, r, ref: {"a": [1.0] * len(r)}
  task = text_task("bad", examples(2), [], tok, max_new_tokens=4, reward=reward,
                   weights={"a": 1.0, "b": 0.0})
  with pytest.raises(Exception, match=r"returned components \['a'\]; the weights name "
                                      r"\['a', 'b'\]"):
    jax.block_until_ready(score_once(task, tok))


def test_a_nan_reward_passes_to_the_train_step(tok):
  task = text_task("nan", examples(2), [], tok, max_new_tokens=4,
                   reward=lambda p, r, ref: [float("nan")] * len(r))
  assert np.all(np.isnan(np.asarray(score_once(task, tok))))


def test_bad_inputs_are_refused_by_name(tok):
  with pytest.raises(ValueError, match=r"ex 0: the prompt has \d+ tokens, more than "
                                       r"config.task.options.max_prompt_tokens = 5"):
    text_task("t", examples(2), [], tok, max_new_tokens=4, verifier=Verifier(),
              max_prompt_tokens=5)
  with pytest.raises(ValueError, match="the held-out set shares 2 of its 3 prompts"):
    text_task("t", examples(5), examples(3, start=3), tok, max_new_tokens=4,
              verifier=Verifier())
  with pytest.raises(ValueError, match="the same prompt with two reference answers"):
    text_task("t", examples(2) + [Example(examples(1)[0].prompt, "9", source="dup")], [], tok,
              max_new_tokens=4, verifier=Verifier())
  with pytest.raises(ValueError, match="a held-out set needs a verifier or a judge"):
    text_task("t", examples(2), examples(1, start=5), tok, max_new_tokens=4,
              reward=lambda p, r, ref: [0.0] * len(r))


def jsonl_config(tmp_path, rows, **options):
  path = tmp_path / "train.jsonl"
  path.write_text("\n".join(rows) + "\n")
  c = tiny(model=dict(LLAMA))
  c.task.name = "jsonl"
  c.task.options = {"path": str(path), "tokenizer": FIXTURE, "num_heldout": 1,
                    "max_new_tokens": 4, **options}
  return c


def test_jsonl_errors_name_the_line(tmp_path):
  c = jsonl_config(tmp_path, ['{"prompt": "a", "answer": 1}', '{"prompt": "b"', ''])
  with pytest.raises(ValueError, match=r"train.jsonl:2: not valid JSON"):
    train.build(c)
  c = jsonl_config(tmp_path, [])
  with pytest.raises(ValueError, match=r"no examples \(the file is empty\)"):
    train.build(c)


def test_a_separate_heldout_file_that_overlaps_is_refused(tmp_path):
  rows = [json.dumps({"prompt": f"What is {i}?", "answer": i}) for i in range(6)]
  held = tmp_path / "held.jsonl"
  held.write_text("\n".join(rows[4:] + [json.dumps({"prompt": "new", "answer": 0})]))
  c = jsonl_config(tmp_path, rows, heldout_path=str(held))
  with pytest.raises(ValueError, match="shares 2 of its 3 prompts with the training set"):
    train.build(c)


def test_the_tokenizer_defaults_to_the_model_checkpoint():
  c = tiny(model={"name": "llama", "init_from": FIXTURE})
  c.task.name = "arithmetic"
  c.task.options = {"num_train": 20, "num_heldout": 4, "max_new_tokens": 4, "chat": False,
                    "max_operand": 3, "instruction": ""}
  task, policy = train.build(c)
  assert task.vocab_size <= policy.vocab_size and task.eos_id == 2
  c = tiny(model=dict(LLAMA))
  c.task.name, c.task.options = "arithmetic", {}
  with pytest.raises(ValueError, match=r"config.task.options.tokenizer: task 'arithmetic' needs "
                                       r"the model's tokenizer"):
    train.build(c)


def test_a_prompt_past_the_models_context_is_refused():
  c = tiny(model={"name": "llama", "init_from": FIXTURE})
  c.task.name = "arithmetic"
  c.task.options = {"num_train": 20, "num_heldout": 4, "max_new_tokens": 40}
  with pytest.raises(ValueError, match=r"prompt \+ response = \d+ positions exceed the context "
                                       r"of 64"):
    train.build(c)


def test_a_model_without_prompt_masks_is_refused():
  c = tiny()
  c.task.name = "arithmetic"
  c.task.options = {"tokenizer": FIXTURE, "num_train": 20, "num_heldout": 4}
  with pytest.raises(ValueError, match=r"left-padded\), which config.model.name = 'gpt' cannot "
                                       r"take; use 'llama'"):
    train.build(c)


def test_training_on_a_text_task_logs_the_reward_components():
  """Two updates of a random Llama on generated arithmetic: the verifier's components are
  logged, the score is their weighted sum, and nothing is masked from the model's vocabulary."""
  c = tiny(model=dict(LLAMA), updates_per_chunk=2)
  c.task.name = "arithmetic"
  c.task.options = {"tokenizer": FIXTURE, "num_train": 30, "num_heldout": 4, "max_new_tokens": 6,
                    "format_weight": 0.5, "max_operand": 4}
  task, policy = train.build(c)
  assert policy.masked_ids == ()
  _, m, _ = run_chunks(c, 1)
  for k in ("correct", "format", "no_answer", "truncated_fraction"):
    assert m[k].shape == (2, 2)
  np.testing.assert_allclose(m["mean_score"], m["correct"] + 0.5 * m["format"], atol=1e-6)
  np.testing.assert_allclose(m["format"] + m["no_answer"], 1.0, atol=1e-6)


@pytest.mark.slow  # a whole training run; default suite under 9 min, CI runs it
def test_gdpo_trains_on_a_text_tasks_reward_components():
  """GDPO reads the verifier's components and weights from the task (Task.component_weights)."""
  c = tiny(model=dict(LLAMA), updates_per_chunk=2, advantage="gdpo")
  c.task.name = "arithmetic"
  c.task.options = {"tokenizer": FIXTURE, "num_train": 30, "num_heldout": 4, "max_new_tokens": 6,
                    "format_weight": 0.5, "max_operand": 4}
  task, _ = train.build(c)
  assert task.component_weights == (("correct", 1.0), ("format", 0.5), ("no_answer", 0.0))
  _, m, _ = run_chunks(c, 1)
  assert np.all(np.isfinite(m["advantage_std"])) and np.all(np.isfinite(m["loss"]))
