#!/usr/bin/env bash
# The device scripts rehearsed on this machine: check.sh and study.sh end to end at toy sizes, in an environment
# with the GPU machines' package versions (.venv-device, `make device-env`), with no network (a network namespace
# of its own, loopback only, and PIP_NO_INDEX=1), with only what a call carries (carry/wheels, the CIFAR-10
# pack). Then checks that every step left its file in $OUT, and that a step stopped at its time limit still left
# the results it had finished. Run through `make device-rehearsal`; see docs/device.md.
#
#   benchmarks/gpu/rehearsal.sh [WORK]      WORK: scratch folder (default: a new one under /tmp)
set -uo pipefail

cd "$(dirname "$0")/../.."
WORK=${1:-$(mktemp -d /tmp/miscause-rehearsal.XXXXXX)}
PYTHON=${PYTHON:-.venv-device/bin/python}
CARRY=${CARRY:-carry}
PROBLEMS=()

problem() {
    echo "rehearsal: PROBLEM: $*"
    PROBLEMS+=("$*")
}

for needed in "$PYTHON" "$CARRY/wheels" "$CARRY/cifar10.pack.npz" "$CARRY/cifar10_pack.py"; do
    [[ -e $needed ]] || { echo "rehearsal: missing $needed (make device-env wheelhouse carry-data)" >&2; exit 2; }
done
mkdir -p "$WORK"
echo "rehearsal in $WORK with $("$PYTHON" --version), triton $("$PYTHON" -c 'import triton; print(triton.__version__)')"

# offline COMMAND...: run with no network (loopback up) and pip restricted to the carried wheels.
offline() {
    unshare --net bash -c 'ip link set lo up && exec "$@"' offline \
        env PIP_NO_INDEX=1 PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHON="$PYTHON" CARRY="$CARRY" "$@"
}

# check.sh, toy scale, on the CPU: kernels interpreted where they must run (the binaries step compiles for sm_90
# without the interpreter). bench-kernels gets more cases than its limit allows, so that it is stopped midway.
started=$SECONDS
offline env OUT="$WORK/check" TRITON_INTERPRET=1 CHECK_SCALE=toy CHECK_BUDGET_SECONDS=2000 \
    CHECK_LIMITS="versions=60 install=120 main-case=120 binaries=300 exactness=400 kernel-tests=300 bench-kernels=20 nsight=30 bench-model=180 bench-serve-targets=240" \
    CHECK_BENCH_CASES="64x32x32,128x32x32$(printf ',16384x32x32%.0s' 1 2 3 4 5 6 7 8)" \
    benchmarks/gpu/check.sh > "$WORK/check.out" 2>&1
status=$?
echo "check.sh: exit $status after $((SECONDS - started)) s"
grep -E "^=== .*: (exit|stopped|kept)|^check.sh done" "$WORK/check.out"

for file in check.log main-case.json binaries.txt bench-kernels.json bench-model.json bench-serve-targets.json; do
    [[ -s $WORK/check/$file ]] || problem "check.sh left no $file"
done
for name in versions install main-case binaries exactness kernel-tests bench-model bench-serve-targets; do
    grep -q "^=== $name: exit 0 after" "$WORK/check/check.log" || problem "step $name did not succeed"
done
grep -q "^=== bench-kernels: stopped at its limit" "$WORK/check/check.log" \
    || problem "bench-kernels was meant to be stopped at its limit"
"$PYTHON" - "$WORK/check" << 'EOF' || problem "results are incomplete (see above)"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
partial = json.loads((out / "bench-kernels.json").read_text())["data"]
assert not partial["complete"] and partial["points"], "the stopped step kept no finished case"
print(f"bench-kernels, stopped: kept {len({(p['n'], p['dtype']) for p in partial['points']})} finished case(s)")
for name in ("main-case", "bench-model", "bench-serve-targets"):
    data = json.loads((out / f"{name}.json").read_text())["data"]
    assert data.get("complete", True) and data["points"], f"{name}.json holds no points"
assert "per image" in (out / "binaries.txt").read_text(), "binaries.txt holds no SASS counts"
log = (out / "check.log").read_text()
assert "all cases exact" in log, "exactness did not report all cases exact"
assert "miscause imports with grpcio 1.85" in log and "protobuf 7." in log, "the carried wheels were not installed"
EOF

# study.sh, toy scale, on the CPU, from the carried CIFAR-10 pack.
started=$SECONDS
offline env OUT="$WORK/study" STUDY_WORK="$WORK/study-work" STUDY_BUDGET_MINUTES=8 \
    STUDY_OPTIONS="--epochs 1 --limit 64 --batch-size 32 --sweep-top-percent 5 --sweep-box 3 --sweep-fill mean \
--curve-methods gradient --curve-images 16 --randomisation-images 8 --device cpu" \
    benchmarks/gpu/study.sh cifarnet > "$WORK/study.out" 2>&1 || problem "study.sh failed (see $WORK/study.out)"
echo "study.sh: done after $((SECONDS - started)) s"
for file in study.log cifarnet_s0.npz; do
    [[ -s $WORK/study/$file ]] || problem "study.sh left no $file"
done

echo
ls -l "$WORK/check" "$WORK/study"
if ((${#PROBLEMS[@]})); then
    echo "rehearsal: ${#PROBLEMS[@]} problem(s): ${PROBLEMS[*]}"
    exit 1
fi
echo "rehearsal passed: every step left its file, the stopped step kept its finished cases"
