"""Tasks (layer 1): prompt sources and rewards, built once and handed down."""

from pg.tasks import toy as _toy  # registers the built-in tasks
from pg.tasks.base import (TASKS, Task, check, get_task_factory, make_task, python_task,
                           register_task, task_options)
from pg.tasks.toy import addition, count_up, count_up_reward, needle, target_token
