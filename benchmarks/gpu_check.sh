#!/usr/bin/env bash
# Every CUDA path of ualm, timed, in one command of under ten minutes on one GPU (run from
# anywhere, on a machine with CUDA and the project's dependencies; e.g. `pip install -e
# ".[book,test]"`, then `bash benchmarks/gpu_check.sh`). In order of importance, each step
# logged and timed, a failing step reported and the next one run:
#   1. the device;
#   2. benchmarks/compute_costs.py: FLOPs and measured seconds per training step and per
#      sampling evaluation of every network and profile, with and without autocast;
#   3. benchmarks/amp_check.py: sampling in bfloat16 vs float32 on the same chains, the batch
#      size picked from free memory, torch.compile;
#   4. the tests that need CUDA, and the budgeted-training tests;
#   5. every chapter in the gpu profile (the default on CUDA), timed, with training budgets of
#      TRAIN_MINUTES (default 1) instead of the chapters' 5 minutes, errors recorded, not fatal.
# Results go to $OUT (default benchmarks/results/gpu_check): *.json, *.log, timings.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-benchmarks/results/gpu_check}
TRAIN_MINUTES=${TRAIN_MINUTES:-1}
CHAPTERS=${CHAPTERS:-"05_diffusion 04_deepstorm 06_calibration 03_mcmc 02_fisher_crlb 01_image_formation"}
mkdir -p "$OUT"
: > "$OUT/timings.txt"
status=0

step() {  # step NAME COMMAND... : run, log, time; remember failures
  local name=$1; shift
  local start=$SECONDS
  echo "== $name: $*"
  if "$@" > "$OUT/$name.log" 2>&1; then r=ok; else r=FAILED; status=1; fi
  echo "$name $r $((SECONDS - start)) s" | tee -a "$OUT/timings.txt"
  tail -n 12 "$OUT/$name.log"
}

$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.cuda.get_device_name(0), torch.__version__, torch.version.cuda)" | tee "$OUT/device.txt" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$OUT/device.txt" 2>/dev/null
export UALM_DEVICE=cuda MPLBACKEND=Agg TQDM_DISABLE=1 UALM_STATIC_WIDGETS=1
step costs $PY benchmarks/compute_costs.py --device cuda --no-cpu --out "$OUT/compute_costs.json"
step amp $PY benchmarks/amp_check.py --compile --out "$OUT/amp_check.json"
step tests $PY -m pytest -q -p no:cacheprovider --continue-on-collection-errors -k "cuda or budget" tests
# shellcheck disable=SC2086
step chapters env UALM_PROFILE=gpu UALM_TRAIN_MINUTES="$TRAIN_MINUTES" \
  UALM_RUNS_DIR="$(mktemp -d)" $PY benchmarks/chapter_times.py --allow-errors --timeout 300 \
  --only $CHAPTERS --out "$OUT/chapter_times_gpu.json"
echo "timings in $OUT/timings.txt"; cat "$OUT/timings.txt"
exit $status
