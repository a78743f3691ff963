#!/usr/bin/env bash
# One GPU session, one prepared command: install the lab from a wheel built beforehand (the GPU
# machine has no network, so nothing can be downloaded or built there), check the compiled kernels,
# run the benchmark scripts, and leave every results file they wrote (plus logs) in $OUT.
#
#   Here, on the CPU machine:  .venv/bin/pip wheel --no-deps -w dist .   (dist/ is git-ignored: carry it)
#   There, on the GPU machine: OUT=... bash benchmarks/gpu_session.sh [quick] [tests] [kernels] [gemv] [moe] [energy]
#
# Two profiles; with no step named, every step runs:
#   full (the default, no `quick`): the whole test files and benchmark grids, for a long loan
#       (each step's limit below; up to about 25 minutes in all).
#   quick (`bash benchmarks/gpu_session.sh quick`): every step in reduced form for a short loan, all of it
#       under 8 minutes: the kernel test files without tests/test_sparse_linear.py, and each benchmark with
#       its --quick flag (fewer shapes, tokens, sparsities or shorter energy windows; it writes
#       <name>_quick.json, never over a full run's file). Its limits, install and doctor included, add up
#       to less than 480 s (tests/test_gpu_session.py checks it); not yet timed on a GPU.
# Steps: tests (compiled kernels and bf16 against float64 references), kernels (benchmarks/kernels.py),
# gemv (benchmarks/sparse_gemv.py, the activation-sparse decode GEMV), moe (benchmarks/moe.py),
# energy (benchmarks/energy.py). Each step has its own time limit, so a slow step cannot eat the
# session; commit the JSON files that come back to benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"

profile=full
if [ "${1:-}" = quick ]; then profile=quick; shift; fi
steps=${*:-tests kernels gemv moe energy}

# Time limits in seconds, per profile (read by tests/test_gpu_session.py: keep one `NAME=number` each).
if [ "$profile" = quick ]; then
    INSTALL_S=30
    DOCTOR_S=30
    TESTS_S=110
    KERNELS_S=100
    GEMV_S=60
    MOE_S=90
    ENERGY_S=45
    QUICK=--quick
    TEST_FILES="tests/test_kernel_sparse_gemv.py tests/test_kernel_bsr.py tests/test_kernel_csr.py
                tests/test_kernel_semi24.py tests/test_moe_kernel.py"
else
    INSTALL_S=300
    DOCTOR_S=120
    TESTS_S=300
    KERNELS_S=560
    GEMV_S=180
    MOE_S=300
    ENERGY_S=150
    QUICK=
    TEST_FILES="tests/test_kernel_sparse_gemv.py tests/test_kernel_bsr.py tests/test_kernel_csr.py
                tests/test_kernel_semi24.py tests/test_sparse_linear.py tests/test_moe_kernel.py"
fi
stamp=$(mktemp)
# One log for the whole session (doctor, then each step under its "=== step" line): the device returns
# at most 8 files, so the log and the (at most four) results files fit.
LOG="$OUT/session.log"
echo "gpu_session: $profile profile, steps: $steps" | tee "$LOG"

wheel=$(ls dist/sparse_models_lab-*.whl 2>/dev/null | tail -n 1)
if [ -z "$wheel" ]; then
    echo "no wheel in dist/: build it first with 'pip wheel --no-deps -w dist .' and carry dist/" >&2
    exit 2
fi
# --no-deps: the GPU machine's own torch and triton must stay as they are.
timeout "$INSTALL_S" python -m pip install -q --no-deps --force-reinstall "$wheel" || exit 1
export PYTHONUNBUFFERED=1
# The installed wheel reads the committed results (roofs, baselines, auto plans) from this checkout.
export LABKIT_RESULTS="$PWD/benchmarks/results"
timeout "$DOCTOR_S" python -m labkit doctor 2>&1 | tee -a "$LOG"

status=0
for step in $steps; do
    echo "=== $step ($profile)" | tee -a "$LOG"
    case $step in
        # Compiled kernels (and bf16) against float64 references; nbval is not installed there.
        # python -P: keep the checkout's own labkit/ folder off sys.path, so the installed wheel
        # (which maps kernels/ to labkit.kernels) is what gets imported.
        # shellcheck disable=SC2086  # TEST_FILES and QUICK are word lists on purpose
        tests)   timeout "$TESTS_S" python -P -m pytest -q -o addopts="" -p no:cacheprovider $TEST_FILES \
                     2>&1 | tee -a "$LOG"; rc=${PIPESTATUS[0]} ;;
        kernels) timeout "$KERNELS_S" python benchmarks/kernels.py $QUICK 2>&1 | tee -a "$LOG"
                 rc=${PIPESTATUS[0]} ;;
        gemv)    timeout "$GEMV_S" python benchmarks/sparse_gemv.py $QUICK 2>&1 | tee -a "$LOG"
                 rc=${PIPESTATUS[0]} ;;
        moe)     timeout "$MOE_S" python benchmarks/moe.py $QUICK 2>&1 | tee -a "$LOG"; rc=${PIPESTATUS[0]} ;;
        energy)  timeout "$ENERGY_S" python benchmarks/energy.py $QUICK 2>&1 | tee -a "$LOG"
                 rc=${PIPESTATUS[0]} ;;
        *) echo "unknown step '$step': use tests, kernels, gemv, moe or energy (after 'quick', if wanted)" >&2
           rc=2 ;;
    esac
    [ "$rc" -eq 0 ] || { echo "step $step failed (exit $rc)" | tee -a "$LOG"; status=1; }
done
# Only the results written by this run travel back (with session.log: at most 8 files).
find benchmarks/results -name '*.json' -newer "$stamp" -exec cp {} "$OUT"/ \;
ls -l "$OUT"
exit $status
