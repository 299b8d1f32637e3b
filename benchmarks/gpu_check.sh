#!/usr/bin/env bash
# Every CUDA path of ualm in under ten minutes on one GPU (run from anywhere, on a machine with
# CUDA and the project installed, e.g. `python3 dev.py test -q tests/test_diffusion.py` once to
# make .venv, then `PY=.venv/bin/python bash benchmarks/gpu_check.sh`).
#   1. the test suite without the chapter runs (the CUDA tests run instead of being skipped);
#   2. short full-profile training of φ and Ψ (AMP, checkpoints, resume) through the CLI;
#   3. the CUDA rows of the simulation and diffusion benchmarks (written under $OUT, so the
#      committed CPU results are left alone);
#   4. chapters 4 and 5 executed in the full profile with training capped at UALM_TRAIN_STEPS
#      (a smoke run: their hidden quality asserts may fail with so little training, which is
#      reported, not hidden).
# Timings go to $OUT/timings.txt, logs to $OUT/*.log.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-benchmarks/results/gpu_check}
STEPS=${STEPS:-300}
mkdir -p "$OUT" runs/gpu_check
: > "$OUT/timings.txt"
status=0

step() {  # step NAME COMMAND... : run, log, time; remember failures
  local name=$1; shift
  local start=$SECONDS
  echo "== $name: $*"
  if "$@" > "$OUT/$name.log" 2>&1; then r=ok; else r=FAILED; status=1; fi
  echo "$name $r $((SECONDS - start)) s" | tee -a "$OUT/timings.txt"
  tail -n 3 "$OUT/$name.log"
}

$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" \
  | tee "$OUT/device.txt" || exit 1
export UALM_DEVICE=cuda
step tests env OMP_NUM_THREADS=4 $PY -m pytest -q -m "not slow" tests
step train_phi_full $PY -m ualm train deepstorm --profile full --out runs/gpu_check/phi --steps "$STEPS" --no-resume --no-progress
step resume_phi_full $PY -m ualm train deepstorm --profile full --out runs/gpu_check/phi --steps "$STEPS" --no-progress
step train_psi_full $PY -m ualm train diffusion --profile full --out runs/gpu_check/psi --steps "$STEPS" --no-resume --no-progress
step bench_sim $PY benchmarks/sim_throughput.py --out "$OUT/sim_throughput.json"
step bench_diffusion $PY benchmarks/diffusion.py --frames 32 --out "$OUT/diffusion.json"
for ch in 04_deepstorm 05_diffusion; do
  step "chapter_$ch" env UALM_PROFILE=full UALM_TRAIN_STEPS="$STEPS" UALM_LIVE_FRAMES=32 \
    $PY -m jupytext --execute --to notebook --output "$OUT/$ch.ipynb" "book/$ch.md"
done
echo "timings in $OUT/timings.txt"; cat "$OUT/timings.txt"
exit $status
