"""Text (layer 1): tokenizers, chat templates and prompt batches for real language models."""

from pg.text.batch import encode_prompts, left_pad, left_pad_mask, response_ids
from pg.text.chat import compile_template, render_chat
from pg.text.tokenizer import Tokenizer, load_tokenizer
