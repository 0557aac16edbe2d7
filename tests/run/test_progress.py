"""The progress bar says "compiling… Ns" while XLA compiles and moves once per update."""

import numpy as np
import pytest
from tqdm import tqdm

from pg import train
from pg.run import progress
from tiny_config import tiny


class Recorder(tqdm):
  """A bar that records every description and position it shows."""

  def __init__(self, *args, **kwargs):
    self.seen_desc, self.seen_n = [], []
    super().__init__(*args, **kwargs)

  def set_description_str(self, desc=None, refresh=True):
    self.seen_desc.append(desc)
    super().set_description_str(desc, refresh)

  def update(self, n=1):
    super().update(n)
    self.seen_n.append(self.n)


def test_the_bar_says_compiling_then_moves_once_per_update(monkeypatch):
  c = tiny(updates_per_chunk=6)
  counter = progress.UpdateCounter()
  init, chunk = train.make_programs(c, *train.build(c), on_update=counter)
  state = init(train.seed_keys(c), train.hparams_from_config(c))
  bar = Recorder(total=6, desc="updates", disable=False)
  compiled = progress.compile_in_background(chunk, (state,), bar, poll=0.05)
  assert any(d.startswith("compiling… ") for d in bar.seen_desc) and bar.desc == "updates"
  # Slow every update down, so the bar is seen between them.
  seen = []
  real = progress.UpdateCounter.__call__

  def slow(self, step, *rest):
    import time
    time.sleep(0.3)
    real(self, step, *rest)
    seen.append(self.done)
  monkeypatch.setattr(progress.UpdateCounter, "__call__", slow)
  counter.bar = bar
  result = compiled(state)
  progress.wait_until_ready(result)
  bar.close()
  assert counter.done == 6 and sorted(set(seen)) == [1, 2, 3, 4, 5, 6]
  assert len(set(bar.seen_n)) >= 3, bar.seen_n  # moved within the chunk, not once at its end
  np.testing.assert_array_equal(np.asarray(result[0].step), [6, 6])


@pytest.mark.slow  # default suite under 9 min; CI runs it
def test_the_callback_changes_no_number():
  c = tiny(updates_per_chunk=3)
  task, policy = train.build(c)
  out = []
  for on_update in (None, progress.UpdateCounter()):
    init, chunk = train.make_programs(c, task, policy, on_update=on_update)
    state = init(train.seed_keys(c), train.hparams_from_config(c))
    out.append(np.asarray(chunk(state)[1]["mean_score"]))
  np.testing.assert_array_equal(out[0], out[1])
