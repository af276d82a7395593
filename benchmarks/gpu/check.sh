#!/usr/bin/env bash
# The erasure kernels' checks on a lent GPU machine, in one call: versions, install, the main kernel case, the
# kernels' binaries, exactness at scale, the kernel tests, `bench kernels`, Nsight Compute on the main case (H100
# only), `bench model` and the service's targets. Each step runs under its own time limit; the limits add up to
# the budget. Each step's result file is copied to $OUT as soon as the step ends (killed or not), and one
# failing step is recorded while the others run.
#
#   OUT=DIR benchmarks/gpu/check.sh              run every step
#   OUT=DIR benchmarks/gpu/check.sh --dry-run    print the steps and their time limits, run nothing
#
# Carried into the working tree's git-ignored carry/ folder: wheels/*.whl (`make wheelhouse`: grpcio, protobuf,
# grpcio-health-checking, grpcio-reflection, aiohttp and its dependencies, which the image lacks or holds too old),
# installed first with no index.
#
# $OUT receives at most 8 files: check.log, STEP.json for main-case, bench-kernels, bench-model and
# bench-serve-targets, binaries.txt, and with Nsight ncu-main-case.txt and main-case.ncu-rep.
#
# Environment:
#   OUT                  required: where check.log and the result files go
#   CHECK_BUDGET_SECONDS all steps together (default 420); every step's limit is scaled to fit it
#   CHECK_STEPS          only these steps, space-separated (versions and install always run), e.g.
#                        "kernel-tests nsight" for a second call
#   CHECK_LIMITS         per-step limits in seconds, replacing the defaults, e.g. "bench-kernels=30 exactness=60"
#   CHECK_SCALE          "full" (default) or "toy": small cases on the CPU, for the rehearsal (docs/device.md)
#   CHECK_BENCH_CASES    the cases of bench-kernels, replacing the scale's (NxHxW,...)
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
export PYTHON=${PYTHON:-python3} CARRY=${CARRY:-carry} OUT
BUDGET=${CHECK_BUDGET_SECONDS:-420}
SCALE=${CHECK_SCALE:-full}
if [[ $SCALE != full && $SCALE != toy ]]; then
    echo "check.sh: CHECK_SCALE must be full or toy, got '$SCALE'" >&2
    exit 2
fi
export SCRATCH
SCRATCH=$(mktemp -d /tmp/miscause-check.XXXXXX)
FAILED=()
mkdir -p "$OUT"
if [[ $DRY_RUN -eq 0 ]]; then
    exec > >(tee -a "$OUT/check.log") 2>&1
fi

# Each step: its name and default limit; the limits sum to 420 s and are scaled to CHECK_BUDGET_SECONDS.
STEPS=(versions install main-case binaries exactness kernel-tests bench-kernels nsight bench-model
       bench-serve-targets)
declare -A LIMIT=([versions]=15 [install]=40 [main-case]=40 [binaries]=40 [exactness]=60 [kernel-tests]=70
                  [bench-kernels]=50 [nsight]=35 [bench-model]=35 [bench-serve-targets]=35)
for pair in ${CHECK_LIMITS:-}; do
    LIMIT[${pair%%=*}]=${pair#*=}
done
total=0
for name in "${STEPS[@]}"; do total=$((total + LIMIT[$name])); done
if ((total > BUDGET)); then
    for name in "${STEPS[@]}"; do LIMIT[$name]=$((LIMIT[$name] * BUDGET / total)); done
fi

if [[ $SCALE == toy ]]; then
    DEVICE=cpu
    MAIN_CASES=64x32x32
    BENCH_CASES=64x32x32,2x224x224
    BENCH_OPTIONS="--impls eager --sets 1 --calls 2"
    EXACTNESS_OPTIONS="--divide 35000 --device cpu"
    TEST_SELECTION="nonfinite_values_are"
    MODEL_OPTIONS="--archs cifarnet --batch-sizes 8 --backends eager --seconds 0.2"
    SERVE_OPTIONS="--duration 0.5 --warmup 0.2 --in-process-seconds 0.2"
else
    DEVICE=cuda
    MAIN_CASES=16384x32x32
    BENCH_CASES=4096x32x32,16384x32x32,256x224x224
    BENCH_OPTIONS=""
    EXACTNESS_OPTIONS=""
    TEST_SELECTION="ties_go_to or at_224 or nonfinite_values_are or debug_assertions"
    MODEL_OPTIONS="--archs cifarnet,resnet50 --batch-sizes 256 --backends eager,compile,gradient --seconds 0.5"
    SERVE_OPTIONS="--duration 3 --warmup 1 --in-process-seconds 2"
fi
BENCH_CASES=${CHECK_BENCH_CASES:-$BENCH_CASES}
# Options are plain words, split where used, so that they reach the steps' child shells.
export DEVICE MAIN_CASES BENCH_CASES BENCH_OPTIONS EXACTNESS_OPTIONS TEST_SELECTION MODEL_OPTIONS SERVE_OPTIONS

# step NAME COMMAND...: run COMMAND (a command or an exported function) in a child bash under the step's limit,
# log its exit status, then copy its result file (if any) to $OUT.
step() {
    local name=$1
    shift
    if [[ -n "${CHECK_STEPS:-}" && $name != versions && $name != install && " $CHECK_STEPS " != *" $name "* ]]; then
        return 0
    fi
    local limit=${LIMIT[$name]}
    if [[ $DRY_RUN -eq 1 ]]; then
        echo "step $name (at most $limit s): $*"
        return 0
    fi
    echo
    echo "=== $name (limit $limit s) at $(date -u +%T)"
    local started=$SECONDS
    mkdir -p "$SCRATCH/$name"
    STEP_OUT=$SCRATCH/$name timeout --signal=TERM --kill-after=5 "$limit" bash -c '"$@"' "$name" "$@"
    local status=$?
    ((status == 124 || status == 137)) && echo "=== $name: stopped at its limit of $limit s"
    echo "=== $name: exit $status after $((SECONDS - started)) s"
    ((status == 0)) || FAILED+=("$name (exit $status)")
    keep "$name"
}

# keep NAME: copy the step's JSON result (complete or, for a step cut short, as far as it got) to $OUT/NAME.json.
keep() {
    local found
    found=$(find "$SCRATCH/$1" -name '*.json' -print -quit 2> /dev/null)
    if [[ -n "$found" ]]; then
        cp "$found" "$OUT/$1.json"
        echo "=== $1: kept $(basename "$found") as $1.json"
    fi
}

finish() {
    rm -rf "$SCRATCH"
    if [[ $DRY_RUN -eq 0 ]]; then
        echo
        echo "check.sh done in $SECONDS s; ${#FAILED[@]} step(s) failed: ${FAILED[*]:-none}"
        ls -l "$OUT"
    fi
}
trap finish EXIT

versions() {
    "$PYTHON" -c "
import importlib.metadata as metadata, platform
print('python', platform.python_version())
for name in ('torch', 'torchvision', 'triton', 'numpy', 'grpcio', 'protobuf', 'grpcio-health-checking',
             'grpcio-reflection', 'onnxruntime', 'onnxruntime-gpu', 'pytest', 'miscause'):
    try:
        print(name, metadata.version(name))
    except metadata.PackageNotFoundError:
        print(name, 'not installed')
import torch
print('CUDA', torch.version.cuda, 'GPUs:', [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
    fi
    if command -v ncu > /dev/null; then ncu --version | tail -1; else echo "ncu: not on PATH"; fi
}

# The carried wheels, then the project from this checkout unless its distribution is installed already (a
# plain `import miscause` succeeds from the repository root whether or not it is): no build isolation, no index.
install() {
    if compgen -G "$CARRY/wheels/*.whl" > /dev/null; then
        "$PYTHON" -m pip install -q --no-deps --no-index "$CARRY"/wheels/*.whl || return 1
    else
        echo "no wheels in $CARRY/wheels: the service needs grpcio-health-checking, grpcio-reflection and aiohttp (make wheelhouse)"
    fi
    if ! "$PYTHON" -c "import importlib.metadata as m; m.distribution('miscause')" 2> /dev/null; then
        "$PYTHON" -m pip install -q --no-deps --no-build-isolation --no-index -e . || return 1
    fi
    "$PYTHON" -c "
import importlib.metadata as m
import miscause.kernels, miscause.server.main, miscause.benchmarks.kernels
print('miscause imports with', ', '.join(f'{n} {m.version(n)}' for n in ('grpcio', 'protobuf',
      'grpcio-health-checking', 'grpcio-reflection')))" || return 1
    "$PYTHON" -m pytest --version
}

# The main case first, on its own: 16,384 images of 32x32x3, float32, p = 5, box = 3, every kernel and eager.
main_case() {
    local impls=triton_unchecked,triton_packed,triton_bands,triton_gradient,eager
    [[ $DEVICE == cpu ]] && impls=eager
    "$PYTHON" -m miscause bench kernels --device "$DEVICE" --cases "$MAIN_CASES" --dtypes float32 --impls "$impls" \
        --out "$STEP_OUT"
}

NSIGHT_CASE='
import torch
from miscause.kernels import erase_unchecked
g = torch.Generator().manual_seed(0)
images = torch.randn((16384, 3, 32, 32), generator=g).cuda()
saliency = torch.randn((16384, 32, 32), generator=g).cuda()
for variant in ("packed", "bands"):
    for _ in range(2):
        erase_unchecked(images, saliency, 5, 3, implementation=variant)
torch.cuda.synchronize()'

# Nsight Compute on the main case, where it can read counters: the H100 (the H200's runtime refuses it).
nsight() {
    if ! command -v ncu > /dev/null || ! nvidia-smi --query-gpu=name --format=csv,noheader 2> /dev/null | grep -q H100; then
        echo "no Nsight Compute profile: needs ncu and an H100"
        return 0
    fi
    ncu --clock-control none --kernel-name regex:'packed_kernel|bands_kernel' --launch-skip 0 --launch-count 4 \
        --section SpeedOfLight --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
        --section ComputeWorkloadAnalysis --export "$OUT/main-case" --force-overwrite \
        "$PYTHON" -c "$NSIGHT_CASE" > "$OUT/ncu-main-case.txt"
    local status=$?
    tail -n 120 "$OUT/ncu-main-case.txt"
    return $status
}

# The packed binary of the main case as this machine's Triton builds it: SASS counts per image (compile only: no
# GPU needed, and never the interpreter). Every launch's registers: bench-kernels lists those it ran.
binaries() {
    env -u TRITON_INTERPRET "$PYTHON" benchmarks/kernel_binaries.py --sass > "$OUT/binaries.txt"
    local status=$?
    cat "$OUT/binaries.txt"
    return $status
}

bench_kernels() {
    "$PYTHON" -m miscause bench kernels --device "$DEVICE" --cases "$BENCH_CASES" $BENCH_OPTIONS --out "$STEP_OUT"
}

bench_model() {
    "$PYTHON" -m miscause bench model --device "$DEVICE" $MODEL_OPTIONS --out "$STEP_OUT"
}

# ONNX Runtime on the image is CPU only, so the service serves the torch.export program.
bench_serve_targets() {
    "$PYTHON" -m miscause bench serve --targets --forward-backend torch $SERVE_OPTIONS --out "$STEP_OUT"
}

kernel_tests() {
    "$PYTHON" -m pytest -q -p no:cacheprovider -rfEs tests/test_kernels_cuda.py tests/test_kernels_launch.py \
        tests/test_kernels_triton.py -k "not test_kernels_triton or $TEST_SELECTION"
}

exactness() {
    "$PYTHON" benchmarks/gpu/exactness.py $EXACTNESS_OPTIONS
}

export -f versions install main_case nsight binaries bench_kernels bench_model bench_serve_targets kernel_tests \
    exactness
export NSIGHT_CASE

echo "check.sh at $(date -u +%FT%TZ), budget $BUDGET s, scale $SCALE"
step versions versions
step install install
step main-case main_case
step binaries binaries
step exactness exactness
step kernel-tests kernel_tests
step bench-kernels bench_kernels
step nsight nsight
step bench-model bench_model
step bench-serve-targets bench_serve_targets
((${#FAILED[@]} == 0))
