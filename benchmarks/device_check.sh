#!/usr/bin/env bash
# The GPU checks in one run, for a machine with a CUDA device and PyTorch but without this
# project's other dependencies: wheels in .whl/ (kornia, kornia_rs, hydra-core, omegaconf,
# antlr4, torchdata, psutil, joblib, hydra-joblib-launcher; benchmarks/device_wheels.sh downloads
# them) are installed to /tmp/site.
# Writes to $OUT (or benchmarks/results). Each part can be skipped with SKIP_<PART>=1.
set -uo pipefail
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)  # absolute: one part runs from experiments/
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src:$PWD PYTHONUNBUFFERED=1 WANDB_MODE=offline
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, lightning, kornia, hydra; print('torch', torch.__version__, 'lightning', lightning.__version__)"
# The GPU benchmark: about 2 minutes eager, then the compiled regions, whose parts start only
# within COMPILE_BUDGET_S seconds (one part compiles for a minute or more); SKIP_COMPILE=1 leaves
# them out. gpu_partial.json keeps every result so far should the timeout strike.
[ -n "${SKIP_BENCH:-}" ] || NRKNET_BENCH_COMPILE=$([ -n "${SKIP_COMPILE:-}" ] && echo 0 || echo 1) \
  NRKNET_BENCH_COMPILE_BUDGET_S=${COMPILE_BUDGET_S:-240} NRKNET_BENCH_PARTIAL="$OUT/gpu_partial.json" \
  timeout 540 python3 benchmarks/run_all.py --only gpu 2>&1 | tee "$OUT/gpu.log"
cp benchmarks/results/gpu.json "$OUT/" 2>/dev/null
# GPU-hours of each paper study at the rates just measured (the README's table)
[ -n "${SKIP_BENCH:-}" ] || (cd experiments && timeout 60 python3 cost.py --markdown table1_dpdd \
  table2_lfdof table3_rkr table4_pipeline table5_losses atoms_J --gpu "$OUT/gpu.json" \
  --precision bf16-mixed) > "$OUT/study_cost.md" 2>&1
# nrknet-train end to end on the GPU with bf16 mixed precision (tiny synthetic set; compile: auto
# compiles the regions, as in a real GPU run)
[ -n "${SKIP_TRAIN:-}" ] || timeout 240 python3 -m nrknet.train experiment=quickstart trainer=gpu trainer.precision=bf16-mixed \
  trainer.max_epochs=2 data.num_train=16 data.num_val=2 data.num_test=2 data.size=128 \
  data.crop_size=96 data.progress=false metrics.lpips=off paths.root_dir=/tmp/nrk \
  paths.data_dir=/tmp/nrk/data paths.log_dir=/tmp/nrk/logs "~callbacks.progress_bar" \
  2>&1 | tail -25 | tee "$OUT/train_gpu.log"
# nrknet-predict on a 24 MP 16-bit image: float32, --half, --batch 4
[ -n "${SKIP_PREDICT:-}" ] || timeout 240 python3 benchmarks/device_predict.py "$OUT/predict_gpu.json"
# the training loader on this machine's cores: decoded vs data.cache=ram, per worker and at the
# DPDD config's worker count (target: twice the compiled step rate, 320 samples/s)
[ -n "${SKIP_DATA:-}" ] || { timeout 150 python3 benchmarks/run_all.py --only data \
  && cp benchmarks/results/data.json "$OUT/data_device.json"; }
# concurrent sweep jobs on one GPU: aggregate images/s of a study with 1, 2, 4 and 8 jobs at once
[ -n "${SKIP_SWEEP:-}" ] || timeout 300 python3 benchmarks/bench_sweep.py --size gpu 2>&1 | tail -60 | tee "$OUT/sweep_gpu.log"
