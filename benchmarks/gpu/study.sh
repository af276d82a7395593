#!/usr/bin/env bash
# The study's self-contained per-architecture stages on a lent GPU machine, in one call: one result file per
# architecture and seed (ARCH_sSEED.npz) and the log into $OUT; nothing else is kept (see docs/study.md).
#
#   benchmarks/gpu/study.sh ARCH...                    e.g. benchmarks/gpu/study.sh resnet50 googlenet
#
# Carried into the working tree's git-ignored carry/ folder: cifar10.pack.npz (the CIFAR-10 JPEG copy, packed)
# and cifar10_pack.py (the tool that unpacks it); wheels/*.whl (`make wheelhouse`), installed first with no index,
# for dependencies the machine's image lacks or holds too old.
#
# Environment:
#   OUT                   required: where the result files (ARCH_sSEED.npz) and study.log go
#   STUDY_BUDGET_MINUTES  all stages together (default 5); no stage starts after it, each trains only the
#                         epochs that fit its share, and the whole run is stopped 90 s after it; `none`: no
#                         budget and no stop, each stage trains its recipe's epochs (toy runs in tests)
#   STUDY_OPTIONS         more options for `miscause study`, e.g. "--epochs 1 --limit 64" for a toy run
#   STUDY_WORK            scratch folder: the unpacked data, the decoded cache, checkpoints (default /tmp/miscause-study)
#   CARRY                 the carried folder (default carry)
#   PYTHON                the interpreter (default python3)
set -euo pipefail

cd "$(dirname "$0")/../.."
if [[ $# -eq 0 || -z "${OUT:-}" ]]; then
    echo "usage: OUT=DIR benchmarks/gpu/study.sh ARCH..." >&2
    exit 2
fi
PYTHON=${PYTHON:-python3}
CARRY=${CARRY:-carry}
WORK=${STUDY_WORK:-/tmp/miscause-study}
BUDGET=${STUDY_BUDGET_MINUTES:-5}
read -r -a EXTRA <<< "${STUDY_OPTIONS:-}"
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/study.log") 2>&1

fail() {
    echo "study.sh: error: $*"
    exit 2
}

keep_results() {
    if compgen -G "$WORK/study/results/*.npz" > /dev/null; then
        cp "$WORK"/study/results/*.npz "$OUT"/
    fi
    ls -l "$OUT"
}
trap keep_results EXIT

echo "study.sh $* at $(date -u +%FT%TZ), budget $BUDGET min, options: ${EXTRA[*]:-none}"
nvidia-smi -L 2> /dev/null || echo "no nvidia-smi: running on $(uname -m) CPUs"

if compgen -G "$CARRY/wheels/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-deps --no-index "$CARRY"/wheels/*.whl
fi
# The installed distribution, not `import miscause` (which succeeds from the repository root either way); the
# machine has no network, so no build isolation and no index.
if ! "$PYTHON" -c "import importlib.metadata as m; m.distribution('miscause')" 2> /dev/null; then
    "$PYTHON" -m pip install -q --no-deps --no-build-isolation --no-index -e .
fi
missing=$("$PYTHON" -c "
try:
    import miscause.jobs.study_stage, miscause.jobs.study
except ModuleNotFoundError as error:
    print(error.name)") || fail "miscause does not import (see above)"
[[ -z "$missing" ]] || fail "the image lacks the module '$missing': carry its wheel in $CARRY/wheels/"

if [[ ! -d "$WORK/cifar10/test" ]]; then
    [[ -f "$CARRY/cifar10.pack.npz" && -f "$CARRY/cifar10_pack.py" ]] \
        || fail "carry $CARRY/cifar10.pack.npz and $CARRY/cifar10_pack.py (the data and the tool that unpacks it)"
    "$PYTHON" "$CARRY/cifar10_pack.py" unpack "$CARRY/cifar10.pack.npz" "$WORK/cifar10.partial"
    mv "$WORK/cifar10.partial" "$WORK/cifar10"
fi

export MISCAUSE_CACHE=${MISCAUSE_CACHE:-$WORK/cache}
study=("$PYTHON" -m miscause study --stage-only --archs "$@" --data "$WORK/cifar10" --out "$WORK/study" --no-progress)
if [[ "$BUDGET" == none ]]; then
    "${study[@]}" "${EXTRA[@]}"
else
    hard_limit=$("$PYTHON" -c "print(round(float('$BUDGET') * 60 + 90))")
    timeout --signal=TERM --kill-after=10 "$hard_limit" "${study[@]}" --budget-minutes "$BUDGET" "${EXTRA[@]}"
fi
