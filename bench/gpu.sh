#!/usr/bin/env bash
# The prepared GPU check: one command per call on a lent GPU machine (the `device` tool), whose
# image has PyTorch with CUDA, numpy, scipy, scikit-learn, matplotlib, rich and typer but not
# cvxpy: `make gpu-wheels` here first saves cvxpy and what it imports (Clarabel, qdldl,
# sparsediffpy; 19 MB, CPython 3.12) in .whl/, which the call carries.
#
#   bash bench/gpu.sh quick     # the quick profile of every claim with --device cuda (~10 min cap)
#   bash bench/gpu.sh heavy     # the heaviest quick claims on that machine's CPU, then its GPU,
#                               # and mirror/steepest descent's smoke profile on cuda
#   bash bench/gpu.sh full      # the full profile's time per claim on cuda, estimated from its
#                               # sweeps with steps × 0.001 and × 0.002 (bench/full_estimate.py)
#
# Each writes its table to $OUT (what comes back from the device machine) as it goes, so a
# call stopped at its time limit still returns the claims that finished.
set -uo pipefail
mode=${1:-quick}
case "$mode" in quick|heavy|full) ;; *) echo "gpu.sh: mode must be quick, heavy or full (got '$mode')"; exit 2 ;; esac
OUT=${OUT:-/tmp/dltheory-gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "gpu.sh: installing .whl/ failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD/src
else
    export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1
python3 - <<'EOF' | tee "$OUT/machine.txt"
import os, platform, torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"GPU {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}, "
      f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
      f"{torch.get_num_threads()} torch threads")
import cvxpy, dltheory  # noqa: F401  (fails here, not in the middle of a claim)
if not torch.cuda.is_available():
    raise SystemExit("gpu.sh: this machine has no GPU that PyTorch can use")
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1

# The heaviest quick-profile claims that run on the GPU (cpu_only ones run on the CPU anyway),
# by their time on the 2-core host (bench/results.md).
HEAVY="implicit-bias-gd-l2 implicit-bias-homogeneous-margin lazy-training-resnet \
overparam-teacher-student lazy-training flat-minima-depth width-generalization"
case "$mode" in
    quick)
        python3 bench/quick_profile.py --device cuda 2>&1 | tee "$OUT/quick-cuda.txt" ;;
    heavy)
        # shellcheck disable=SC2086
        python3 bench/quick_profile.py --device cpu --only $HEAVY 2>&1 | tee "$OUT/heavy-cpu.txt"
        # shellcheck disable=SC2086
        python3 bench/quick_profile.py --device cuda --only $HEAVY 2>&1 | tee "$OUT/heavy-cuda.txt"
        python3 bench/quick_profile.py --profile smoke --device cuda --only \
            implicit-bias-mirror-descent implicit-bias-steepest-descent 2>&1 | tee "$OUT/smoke-cuda.txt" ;;
    full)
        python3 bench/full_estimate.py --device cuda --fraction 0.001 --budget 420 2>&1 \
            | tee "$OUT/full-estimate-cuda.txt" ;;
esac
