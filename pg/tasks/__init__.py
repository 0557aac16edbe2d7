"""Tasks (layer 2): prompt sources and rewards, built once and handed down.

Toy tasks on integer tokens (`pg.tasks.toy`) and text tasks for a real model's tokenizer
(`pg.tasks.text`: generators, JSONL files, verifiers, a held-out set).
"""

from pg.tasks import toy as _toy  # registers the built-in tasks
from pg.tasks import text_builtin as _text_builtin  # registers the text tasks
from pg.tasks.base import (TASKS, Task, check, get_task_factory, make_task, python_task,
                           register_task, task_options)
from pg.tasks.datasets import Example, check_disjoint, generate, read_jsonl, split
from pg.tasks.text import HeldOut, text_task
from pg.tasks.toy import addition, count_up, count_up_reward, needle, target_token
from pg.tasks.verifiers import Verifier
