"""Tiny tokenizers for the text tests, built here (no downloads): a byte-level BPE trained on a
few sentences in milliseconds, the strings and chats every parity test compares, and writers for
a GGUF file. The fixtures (a model directory, transformers) are in conftest.py."""

import json

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2

CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny helpful model.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the sum of 2 and 3? It is 5! Numbers: 1234567890, 3.14159, $100,000.",
    "  Leading spaces, trailing spaces   and\ttabs.\nNew lines\n\nand more lines.",
    "naïve café — 日本語のテキスト 🙂 Ünïcödé ß ﬁ don't we'll I'm they're",
    "def f(x):\n    return x ** 2  # code {braces} [brackets] <angles>",
]

# Strings whose ids must match transformers: unicode, spaces, newlines, digits, special tokens.
STRINGS = [
    "Hello world", " Hello", "  two leading spaces", "trailing   ", "tabs\tand\nnew\nlines\n\n",
    "naïve café — 日本語 🙂", "digits 1234567890 and 3.14", "don't we'll I'm",
    "<|im_start|>user\nhi<|im_end|>", "text<|endoftext|>more", "", "\n", "Ünïcödé ß ﬁ",
    "$100,000.00!!!", "def f(x):\n    return x ** 2\n",
]

CHATS = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sum of 2 and 3?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sum of 2 and 3?"},
     {"role": "assistant", "content": "5"}, {"role": "user", "content": "Why?"}],
    [{"role": "user", "content": "naïve 日本語 🙂\n\n  spaced  1 2 3"}],
]


def train_bpe(extra_specials=()):
  """A byte-level BPE of about 400 ids, trained in a few milliseconds."""
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS + list(extra_specials),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tokenizer.train_from_iterator(CORPUS * 4, trainer)
  return tokenizer


def write_json(path, obj):
  path.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")


def write_gguf(path, tokenizer, *, model="gpt2", pre="default", add_bos=False, bos_id=1,
               eos_id=2, eot_id=None, pad_id=None, chat_template=CHATML, types=None):
  """Write `tokenizer`'s vocabulary and merges as a tokenizer-only GGUF file, as llama.cpp's
  converter lays them out (SPECIALS marked control)."""
  import gguf
  state = json.loads(tokenizer.to_str())
  vocab = state["model"]["vocab"]
  tokens = sorted(vocab, key=vocab.get)
  writer = gguf.GGUFWriter(str(path), "llama")
  writer.add_tokenizer_model(model)
  writer.add_tokenizer_pre(pre)
  writer.add_token_list(tokens)
  writer.add_token_types(types or [3 if t in SPECIALS else 1 for t in tokens])
  writer.add_token_merges([m if isinstance(m, str) else " ".join(m)
                           for m in state["model"]["merges"]])
  writer.add_bos_token_id(bos_id)
  writer.add_eos_token_id(eos_id)
  if eot_id is not None:
    writer.add_eot_token_id(eot_id)
  if pad_id is not None:
    writer.add_pad_token_id(pad_id)
  writer.add_add_bos_token(add_bos)
  if chat_template is not None:
    writer.add_chat_template(chat_template)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path
