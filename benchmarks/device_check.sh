#!/usr/bin/env bash
# The GPU checks in one run, for a machine with a CUDA device and PyTorch but without this
# project's other dependencies: wheels in .whl/ (kornia, kornia_rs, hydra-core, omegaconf,
# antlr4, torchdata, psutil, joblib, hydra-joblib-launcher; benchmarks/device_wheels.sh downloads
# them) are installed to /tmp/site.
#
# The parts run most telling first, within BUDGET_S seconds in all (default 480): a part that
# would start with less than its minimum left is skipped, and each is cut at the time left.
#   0. tests:   the GPU tier of the test suite (pytest -m gpu, at most TESTS_BUDGET_S, default
#               150), so that the first machine with a GPU tests what it then times;
#   1. gpu:     benchmarks/bench_gpu.py: eager figures (about a minute), then the compiled
#               regions (training at batch 8 and 4, 1280x720 bf16 inference, 200 steps of losses
#               against float32); its parts start only within COMPILE_BUDGET_S seconds
#               (default 150) of the first, and gpu_partial.json keeps every result so far;
#   2. sweep:   benchmarks/bench_sweep.py: 1, 2, 4 and 8 compiled jobs at once on the GPU
#               (SWEEP_JOBS=1,2,4,8), sweep_gpu.json after each N;
#   3. train:   nrknet-train end to end on the GPU, bf16, compile: auto;
#   4. variants: benchmarks/bench_gpu_variants.py: the eager bf16 rate of every network and
#               loss the studies train (gpu_variants.json, saved after each; cost.py prices
#               each row by it);
#   5. data:    the training loader on this machine's cores (data_device.json);
#   6. predict: nrknet-predict on a 24 MP image (off unless RUN_PREDICT=1: measured before).
# Any part can be skipped with SKIP_<PART>=1. The study cost table comes from gpu.json
# afterwards, on any machine: python -m experiments.cost --markdown --gpu <gpu.json>.
# Writes to $OUT (or benchmarks/results).
set -uo pipefail
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
END=$((SECONDS + ${BUDGET_S:-480}))

# part NAME MIN_S MAX_S COMMAND...: run COMMAND for at most MAX_S seconds and the time left
part() {
  local name=$1 min=$2 max=$3 left=$((END - SECONDS))
  shift 3
  local skip_var="SKIP_${name^^}"
  if [ -n "${!skip_var:-}" ]; then echo "== $name: skipped ($skip_var)"; return 0; fi
  if [ "$left" -lt "$min" ]; then echo "== $name: skipped, ${left} s left (needs $min)"; return 0; fi
  [ "$left" -gt "$max" ] && left=$max
  echo "== $name: up to ${left} s ($(date -u +%H:%M:%S))"
  timeout "$left" "$@"
  echo "== $name: exit $? after $((SECONDS - END + ${BUDGET_S:-480})) s of the budget"
}

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src:$PWD PYTHONUNBUFFERED=1 WANDB_MODE=offline
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, lightning, kornia, hydra; print('torch', torch.__version__, 'lightning', lightning.__version__)"

gpu_tests() {
  python3 -m pytest -m gpu -q -rs -p no:cacheprovider tests >"$OUT/gpu_tests.log" 2>&1
  local rc=$?
  tail -30 "$OUT/gpu_tests.log"
  return $rc
}
gpu_bench() {
  NRKNET_BENCH_COMPILE=$([ -n "${SKIP_COMPILE:-}" ] && echo 0 || echo 1) \
    NRKNET_BENCH_COMPILE_BUDGET_S=${COMPILE_BUDGET_S:-150} \
    NRKNET_BENCH_PARTIAL="$OUT/gpu_partial.json" \
    python3 -m benchmarks.run_all --only gpu >"$OUT/gpu.log" 2>&1 \
    && cp benchmarks/results/gpu.json "$OUT/gpu.json"
  local rc=$?
  tail -40 "$OUT/gpu.log"
  return $rc
}
sweep_bench() {
  python3 -m benchmarks.bench_sweep --size gpu --jobs "${SWEEP_JOBS:-1,2,4,8}" \
    --partial "$OUT/sweep_gpu.json" >"$OUT/sweep_gpu.log" 2>&1
  local rc=$?
  head -8 "$OUT/sweep_gpu.log"
  tail -20 "$OUT/sweep_gpu.log"
  return $rc
}
train_gpu() {
  python3 -m nrknet.train experiment=quickstart trainer=gpu trainer.precision=bf16-mixed \
    trainer.max_epochs=2 data.num_train=16 data.num_val=2 data.num_test=2 data.size=128 \
    data.crop_size=96 data.progress=false metrics.lpips=off paths.root_dir=/tmp/nrk \
    paths.data_dir=/tmp/nrk/data paths.log_dir=/tmp/nrk/logs "~callbacks.progress_bar" \
    >"$OUT/train_gpu.log" 2>&1
  local rc=$?
  tail -25 "$OUT/train_gpu.log"
  return $rc
}
variants_bench() {
  python3 -m benchmarks.bench_gpu_variants --out "$OUT/gpu_variants.json" 2>&1 | grep -v Warning | tail -25
}
data_bench() {
  python3 -m benchmarks.run_all --only data && cp benchmarks/results/data.json "$OUT/data_device.json"
}

export -f gpu_tests gpu_bench sweep_bench train_gpu variants_bench data_bench
export OUT
part tests 60 "${TESTS_BUDGET_S:-150}" bash -c gpu_tests
part gpu 120 300 bash -c gpu_bench
part sweep 90 240 bash -c sweep_bench
part train 90 180 bash -c train_gpu
part variants 60 200 bash -c variants_bench
part data 90 150 bash -c data_bench
[ -n "${RUN_PREDICT:-}" ] && part predict 120 240 python3 -m benchmarks.device_predict "$OUT/predict_gpu.json"
echo "== done after $((SECONDS - END + ${BUDGET_S:-480})) s"
