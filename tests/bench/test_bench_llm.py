"""The real-model benchmark (`pg.bench.llm`, experiments/bench_llm.py) on a tiny random "llama"
model through the same code path: every column, every number positive and finite. No timing
thresholds (speed claims live in the report, never in a test)."""

import math
import os
import subprocess
import sys

import jax
import ml_collections
import pytest

from pg.bench import llm
from pg.policy import base as policy_base
from pg.policy import build_policy
from pg.run import configs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Qwen2.5-0.5B's features (biases on q, k, v; θ = 1e6; tied; 7:1 grouped heads) at a tiny size.
TINY_QWEN = llm.RandomModel("tiny Qwen-shaped", {**llm.QWEN2_5_0_5B.options, "num_layers": 1,
                                                 "d_model": 28, "num_heads": 14,
                                                 "num_kv_heads": 2, "mlp_dim": 32}, 96)


def tiny():
  """configs/bench_smollm2.py's fields, with a 1-layer random "llama" for the checkpoint."""
  c = configs.base_config()
  c.task.name = "target_token"
  c.task.options = {"vocab_size": 64, "prompt_len": 4, "length": 4, "target": 7}
  c.model = ml_collections.ConfigDict({"name": "llama", "num_layers": 1, "d_model": 16,
                                       "num_heads": 2, "num_kv_heads": 1, "mlp_dim": 32,
                                       "dtype": "float32"})
  c.num_seeds, c.num_prompts, c.group_size, c.updates_per_chunk = 1, 2, 2, 1
  return c


def check_row(r, B, P, T):
  assert tuple(r)[:len(llm.COLUMNS)] == llm.COLUMNS
  assert len(r["update times"]) == len(r["sampling times"]) == 5  # repeats=5
  numbers = {k: r[k] for k in llm.COLUMNS if k not in ("model", "dtype")}
  assert all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
             for v in numbers.values()), numbers
  assert 0 < r["sampling share"] < 1
  assert (r["B"], r["P"], r["T"]) == (B, P, T)
  # Every response has T tokens (no end token): tokens/s is B·T per update.
  assert r["tokens/s"] * r["s/update"] == pytest.approx(B * T)


def test_a_row_has_every_column_and_the_report_carries_it_with_the_command():
  (row,) = llm.run(tiny(), ("float32",), repeats=5, peak=1e11)
  assert (row["model"], row["dtype"]) == ("random 1L×16", "float32")
  check_row(row, 4, 4, 4)
  text = llm.table([row])
  assert text.splitlines()[0] == "| " + " | ".join(llm.COLUMNS) + " |"
  assert text.splitlines()[2].startswith("| random 1L×16 | float32 | ")
  report = llm.markdown_report([row], llm.header(tiny()), "float32 matmul peak: 1", "python x.py",
                               12.0, repeats=1)
  assert "```bash\npython x.py\n```" in report and text in report
  assert "- task target_token (vocabulary 64): 1 seed(s) × 2 prompts × 2 samples = B 4" in report
  assert "- float32 matmul peak: 1" in report and "bfloat16 takes" not in report
  assert "- random 1L×16 float32: updates " in report


@pytest.mark.slow  # four compiles: about a minute on a busy 2-core CPU
def test_both_dtypes_and_the_qwen_shaped_random_model_run_through_the_same_path():
  rows = llm.run(tiny(), llm.DTYPES, repeats=5, peak=1e11, random=[TINY_QWEN])
  assert [(r["model"], r["dtype"]) for r in rows] == [
      ("random 1L×16", "float32"), ("random 1L×16", "bfloat16"),
      ("tiny Qwen-shaped", "float32"), ("tiny Qwen-shaped", "bfloat16")]
  for r in rows:
    check_row(r, 4, 4, 4)
  assert rows[2]["params M"] > rows[0]["params M"]  # its own vocabulary (96) and biases
  sentences = llm.dtype_comparison(rows)
  assert len(sentences) == 2 and sentences[1].startswith("tiny Qwen-shaped: bfloat16 takes ")


def test_the_random_model_takes_qwen2_5_0_5b_s_shape():
  (_, smol), (label, qwen) = llm.problems(tiny(), ("bfloat16",), [llm.QWEN2_5_0_5B])
  assert smol.model.dtype == "bfloat16" and label == llm.QWEN2_5_0_5B.label
  assert qwen.task.options.vocab_size == 151936 and qwen.model.dtype == "bfloat16"
  assert (qwen.model.qkv_bias, qwen.model.rope_theta, qwen.model.num_kv_heads) == (True, 1e6, 2)
  policy = build_policy(qwen.model, vocab_size=151936, max_len=8)
  shapes = policy_base.abstract_params(policy)  # shapes only: nothing of 0.5B is allocated
  n = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes))
  assert n == 494_032_768  # Qwen2.5-0.5B's parameter count (tied embeddings)


def test_the_random_model_runs_on_a_gpu_unless_asked_otherwise():
  assert llm.random_models(backend="cpu") == []
  assert llm.random_models(backend="gpu") == [llm.QWEN2_5_0_5B]
  assert llm.random_models("always", "cpu") == [llm.QWEN2_5_0_5B]
  assert llm.random_models("never", "gpu") == []
  with pytest.raises(ValueError, match="random_model"):
    llm.random_models("sometimes")
  with pytest.raises(ValueError, match="dtypes: 'float16'"):
    llm.problems(tiny(), ("float16",))


def test_check_refuses_a_missing_checkpoint_before_anything_is_timed():
  llm.check(tiny())
  config = tiny()
  config.model.init_from = "/nowhere/model.gguf"
  with pytest.raises(FileNotFoundError, match="init_from: no GGUF file"):
    llm.check(config)


def test_peak_rss_is_read_after_a_reset():
  llm.reset_peak_rss()
  assert llm.peak_rss_mib() > 0


@pytest.mark.slow  # a subprocess: imports and a compile
def test_the_script_writes_the_report_with_its_command(tmp_path):
  config_file = tmp_path / "tiny_llm.py"
  config_file.write_text(
      "import ml_collections\n"
      "from pg.run.configs import base_config\n\n\n"
      "def get_config():\n"
      "  c = base_config()\n"
      "  c.task.name = 'target_token'\n"
      "  c.task.options = {'vocab_size': 32, 'prompt_len': 2, 'length': 3, 'target': 1}\n"
      "  c.model = ml_collections.ConfigDict({'name': 'llama', 'num_layers': 1, 'd_model': 8,\n"
      "                                      'num_heads': 2, 'num_kv_heads': 1, 'mlp_dim': 8})\n"
      "  c.num_seeds, c.num_prompts, c.group_size, c.updates_per_chunk = 1, 2, 2, 1\n"
      "  return c\n")
  report = tmp_path / "report.md"
  args = ["experiments/bench_llm.py", f"--config={config_file}", "--config.num_prompts=1",
          "--dtypes=float32", "--repeats=1", "--peak_size=64", f"--report={report}"]
  out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=True).stdout
  text = report.read_text()
  assert "| " + " | ".join(llm.COLUMNS) + " |" in out and "| random 1L×8 | float32 | " in text
  assert "prompts × 2 samples = B 2 rows" in text  # the override reached the run
  assert "python experiments/bench_llm.py --config=" in text
  assert "--config.num_prompts=1 --dtypes=float32 --repeats=1" in text
