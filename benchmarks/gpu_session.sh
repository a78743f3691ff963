#!/usr/bin/env bash
# One GPU session, one prepared command: install the lab from a wheel built beforehand (the GPU
# machine has no network, so nothing can be downloaded or built there), check the compiled kernels,
# run the benchmark scripts, and leave every results file they wrote (plus logs) in $OUT.
#
#   Here, on the CPU machine:  .venv/bin/pip wheel --no-deps -w dist .   (dist/ is git-ignored: carry it)
#   There, on the GPU machine: OUT=... bash benchmarks/gpu_session.sh [tests] [kernels] [moe] [energy]
#
# With no arguments every step runs. Each step has its own time limit (below), so pick the steps
# that fit the session's device time; commit the JSON files that come back to benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
steps=${*:-tests kernels moe energy}
stamp=$(mktemp)

wheel=$(ls dist/sparse_models_lab-*.whl 2>/dev/null | tail -n 1)
if [ -z "$wheel" ]; then
    echo "no wheel in dist/: build it first with 'pip wheel --no-deps -w dist .' and carry dist/" >&2
    exit 2
fi
# --no-deps: the GPU machine's own torch and triton must stay as they are.
python -m pip install -q --no-deps --force-reinstall "$wheel" || exit 1
export PYTHONUNBUFFERED=1
# The installed wheel reads the committed results (roofs, baselines, auto plans) from this checkout.
export LABKIT_RESULTS="$PWD/benchmarks/results"
python -m labkit doctor 2>&1 | tee "$OUT/doctor.txt"

status=0
for step in $steps; do
    echo "=== $step"
    case $step in
        # Compiled kernels (and bf16) against float64 references; nbval is not installed there.
        # python -P: keep the checkout's own labkit/ folder off sys.path, so the installed wheel
        # (which maps kernels/ to labkit.kernels) is what gets imported.
        tests)   timeout 240 python -P -m pytest -q -o addopts="" -p no:cacheprovider tests/test_kernel_bsr.py \
                     tests/test_kernel_csr.py tests/test_kernel_semi24.py tests/test_sparse_linear.py \
                     tests/test_moe_kernel.py 2>&1 | tee "$OUT/gpu_tests.log"; rc=${PIPESTATUS[0]} ;;
        kernels) timeout 560 python benchmarks/kernels.py 2>&1 | tee "$OUT/kernels.log"; rc=${PIPESTATUS[0]} ;;
        moe)     timeout 300 python benchmarks/moe.py 2>&1 | tee "$OUT/moe.log"; rc=${PIPESTATUS[0]} ;;
        energy)  timeout 150 python benchmarks/energy.py 2>&1 | tee "$OUT/energy.log"; rc=${PIPESTATUS[0]} ;;
        *) echo "unknown step '$step': use tests, kernels, moe or energy" >&2; rc=2 ;;
    esac
    [ "$rc" -eq 0 ] || { echo "step $step failed (exit $rc)"; status=1; }
done
# Only the results written by this run travel back (the device returns at most 8 files).
find benchmarks/results -name '*.json' -newer "$stamp" -exec cp {} "$OUT"/ \;
ls -l "$OUT"
exit $status
