#!/usr/bin/env bash
# The speed issue's accelerator measurements, one prepared script (for a lent GPU):
#
#   bash experiments/gpu_speed.sh [OUTDIR]        # OUTDIR defaults to runs/gpu_speed
#
# 1. the PyTorch reference problem (configs/bench_smollm2_reference.py): float32, bfloat16 and a
#    bfloat16 sampler beside a float32 trainer, with the update's parts timed alone;
# 2. that problem with the SmolLM2-135M and Qwen2.5-0.5B shapes (random weights), float32 and
#    bfloat16: tokens/s, the training phase's FLOP/s against the bf16 and TF32 peaks measured
#    in the run (target: at least 40% at 0.5B) and the sampler's bytes per decode step against
#    the memory bandwidth measured in the run.
# Each step writes its log and report to OUTDIR; a failed step does not stop the next.
set -u
out=${1:-runs/gpu_speed}
PY=${PYTHON:-python}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tee "$out/versions.log"
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "== $name: exit $? after $((SECONDS - start)) s"
  tail -n 20 "$out/$name.log"
}
step reference 240 $PY experiments/bench_train.py --reference --breakdown --repeats 3 \
  --report "$out/reference.md"
step accelerator 300 $PY experiments/bench_train.py --reference --accelerator --repeats 3 \
  --report "$out/accelerator.md"
