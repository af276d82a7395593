#!/usr/bin/env bash
# The erasure kernels' checks on a lent GPU machine, in one call: versions, the kernel tests, exactness at scale,
# `bench kernels` (with registers and spills), Nsight Compute on the main case, `bench model` and the service's
# targets. Every step runs under its own timeout and within an overall budget; the log and the result files
# go to $OUT (at most 7 files).
#
#   OUT=DIR benchmarks/gpu/check.sh              run every step
#   OUT=DIR benchmarks/gpu/check.sh --dry-run    print the steps and their time limits, run nothing
#
# Carried into the working tree's git-ignored carry/ folder, optionally: wheels/*.whl, installed first, for
# dependencies the machine's image lacks (pytest, for one).
#
# Environment:
#   OUT                  required: where check.log and the result files go
#   CHECK_BUDGET_SECONDS all steps together (default 420); a step gets the smaller of its own limit and what is
#                        left, and is skipped when under 20 s are left
#   CHECK_STEPS          only these steps, space-separated (versions and install always run), e.g.
#                        "kernel-tests nsight" for a second call after a first one ran out of budget
#   CARRY                the carried folder (default carry)
#   PYTHON               the interpreter (default python3)
set -uo pipefail

cd "$(dirname "$0")/../.."
DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY_RUN=1
    shift
fi
if [[ $# -ne 0 || -z "${OUT:-}" ]]; then
    echo "usage: OUT=DIR benchmarks/gpu/check.sh [--dry-run]" >&2
    exit 2
fi
PYTHON=${PYTHON:-python3}
CARRY=${CARRY:-carry}
BUDGET=${CHECK_BUDGET_SECONDS:-420}
DEADLINE=$((SECONDS + BUDGET))
SCRATCH=$(mktemp -d /tmp/miscause-check.XXXXXX)
FAILED=()
mkdir -p "$OUT"
if [[ $DRY_RUN -eq 0 ]]; then
    exec > >(tee -a "$OUT/check.log") 2>&1
fi

# step NAME LIMIT_SECONDS COMMAND...: run COMMAND under the smaller of LIMIT and the budget left, and log it.
step() {
    local name=$1 limit=$2
    shift 2
    if [[ -n "${CHECK_STEPS:-}" && $name != versions && $name != install && " $CHECK_STEPS " != *" $name "* ]]; then
        return 0
    fi
    local left=$((DEADLINE - SECONDS))
    ((limit > left)) && limit=$left
    if [[ $DRY_RUN -eq 1 ]]; then
        echo "step $name (at most $limit s): $*"
        return 0
    fi
    echo
    echo "=== $name (limit $limit s) at $(date -u +%T)"
    if ((limit < 20)); then
        echo "=== $name: skipped, $left s of the budget left"
        FAILED+=("$name (skipped)")
        return 0
    fi
    local started=$SECONDS
    timeout --signal=TERM --kill-after=10 "$limit" "$@"
    local status=$?
    echo "=== $name: exit $status after $((SECONDS - started)) s"
    ((status == 0)) || FAILED+=("$name (exit $status)")
}

keep_results() {
    if compgen -G "$SCRATCH/*.json" > /dev/null; then
        cp "$SCRATCH"/*.json "$OUT"/
    fi
    rm -rf "$SCRATCH"
    if [[ $DRY_RUN -eq 0 ]]; then
        echo
        echo "check.sh done in $SECONDS s; ${#FAILED[@]} step(s) failed or skipped: ${FAILED[*]:-none}"
        ls -l "$OUT"
    fi
}
trap keep_results EXIT

versions() {
    "$PYTHON" -c "
import platform, torch, triton
print('python', platform.python_version(), '| torch', torch.__version__, '| triton', triton.__version__,
      '| CUDA', torch.version.cuda)
print('GPUs:', [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
try:
    import onnxruntime
    print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())
except ImportError:
    print('onnxruntime: not installed')"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
    if command -v ncu > /dev/null; then ncu --version | tail -1; else echo "ncu: not on PATH"; fi
}

install() {
    if compgen -G "$CARRY/wheels/*.whl" > /dev/null; then
        "$PYTHON" -m pip install -q --no-deps --no-index "$CARRY"/wheels/*.whl || return 1
    fi
    "$PYTHON" -c "import miscause" 2> /dev/null || "$PYTHON" -m pip install -q --no-deps -e . || return 1
    "$PYTHON" -m pytest --version || echo "pytest is missing: carry its wheel (and pluggy, iniconfig) in $CARRY/wheels/"
}

# The main case once per kernel, for Nsight Compute: 16,384 images of 32x32x3, float32, p = 5, box = 3.
MAIN_CASE='
import torch
from miscause.kernels.triton_erase import erase_triton_unchecked
g = torch.Generator().manual_seed(0)
images = torch.randn((16384, 3, 32, 32), generator=g).cuda()
saliency = torch.randn((16384, 32, 32), generator=g).cuda()
for variant in ("packed", "bands"):
    for _ in range(2):
        erase_triton_unchecked(images, saliency, 5, 3, variant=variant)
torch.cuda.synchronize()'

nsight() {
    if ! command -v ncu > /dev/null; then
        echo "ncu is not on PATH: no Nsight Compute profile"
        return 0
    fi
    ncu --clock-control none --kernel-name regex:'packed_kernel|bands_kernel' --launch-skip 0 --launch-count 4 \
        --section SpeedOfLight --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
        --section ComputeWorkloadAnalysis --export "$OUT/main-case" --force-overwrite \
        "$PYTHON" -c "$MAIN_CASE" > "$OUT/ncu-main-case.txt"
    local status=$?
    tail -n 120 "$OUT/ncu-main-case.txt"
    return $status
}

echo "check.sh at $(date -u +%FT%TZ), budget $BUDGET s"
step versions 30 versions
step install 90 install
step exactness 120 "$PYTHON" benchmarks/gpu/exactness.py
step bench-kernels 150 "$PYTHON" -m miscause bench kernels --out "$SCRATCH"
step kernel-tests 180 "$PYTHON" -m pytest -q -p no:cacheprovider -rfEs tests/test_kernels_cuda.py \
    tests/test_kernels_triton.py tests/test_kernels_launch.py
step nsight 75 nsight
step bench-model 75 "$PYTHON" -m miscause bench model --device cuda --archs cifarnet,resnet50 --batch-sizes 256 \
    --backends eager,compile,gradient --seconds 0.5 --out "$SCRATCH"
step bench-serve-targets 75 "$PYTHON" -m miscause bench serve --targets --duration 3 --warmup 1 \
    --in-process-seconds 2 --out "$SCRATCH"
((${#FAILED[@]} == 0))
