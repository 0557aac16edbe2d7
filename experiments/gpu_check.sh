#!/usr/bin/env bash
# The accelerator checks of the speed issue, one script (about 7 minutes on one H200):
#
#   bash experiments/gpu_check.sh [OUTDIR]        # OUTDIR defaults to runs/gpu_check;
#                                                 # PYTHON=python3 picks the interpreter
#
# 1. the reference problem (configs/bench_reference.py) trained on the accelerator, 8 seeds ×
#    100 updates: the learning curve must match the CPU one (mean score above 0.9);
# 2. bench_train's seeds table on that problem, 1 → 256 seeds, then 1024 seeds with 4
#    micro-batches per update (one update of 1024 seeds asks ~216 GiB of temporaries in one
#    piece, ~56 GiB in four);
# 3. the tests that run the compiled model, sampler and train step on the accelerator (log-probs,
#    conventions, shared prompts, and test_train's learning, bit-identical rerun and resume,
#    and micro-batch checks), with float32 matmuls at full precision: the default on recent
#    GPUs is TF32, and the exact checks' tolerances are not sized for it.
# Each step writes its log to OUTDIR; a failed step does not stop the next.
set -u
out=${1:-runs/gpu_check}
PY=${PYTHON:-python}  # the interpreter that has jax with the accelerator's plugin
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # pg without an install
$PY -c "import jax, flax, optax, orbax.checkpoint as o; print('jax', jax.__version__, 'flax',
flax.__version__, 'optax', optax.__version__, jax.devices())" 2>&1 | tee "$out/versions.log"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUTDIR/NAME.log
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "== $name: exit $? after $((SECONDS - start)) s"
  tail -n 25 "$out/$name.log"
}

step train 100 $PY experiments/train.py --config configs/bench_reference.py \
  --config.num_seeds=8 --workdir /tmp/pg_gpu_check_train
cp /tmp/pg_gpu_check_train/curves.png "$out/train_curves.png" 2>/dev/null
step bench 170 $PY experiments/bench_train.py --config configs/bench_reference.py \
  --seeds 1 8 64 256 --repeats 2
step bench1024 90 $PY experiments/bench_train.py --config configs/bench_reference.py \
  --seeds 1024 --repeats 2 --grad-accum-steps 4
t=tests/train/test_train.py
step tests 150 env JAX_DEFAULT_MATMUL_PRECISION=highest $PY -m pytest -q -p no:cacheprovider -rf \
  tests/core/test_logprobs.py tests/core/test_conventions.py tests/policy/test_shared_prompts.py \
  $t::test_short_run_learns $t::test_seeds_differ_and_reruns_are_identical \
  $t::test_resume_continues_exactly $t::test_gradient_accumulation_matches_the_whole_minibatch \
  $t::test_bfloat16_compute_keeps_float32_master_weights_and_learns
