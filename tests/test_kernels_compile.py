"""Every kernel launch the product makes compiles for sm_90, as the launcher specialises it, on Triton 3.6 and here.

The interpreter runs a kernel as Python and accepts some programs the compiler rejects (a reassigned
constexpr, a branch whose two sides give a variable different types, integer arguments that the launcher
specialises to constants). `benchmarks/kernel_binaries.py` records the launches the product's own launcher
makes for each case and compiles them with the kernel's own binder (aligned pointers, integers divisible by
16, integers equal to 1 made constants), so the binary checked is the one a GPU would run. The GPU machines
run Triton 3.6; `make triton36` builds `.venv-triton36` with it, and the same cases are compiled there in a
child process. The binary's resource usage shows spills to local memory and register counts that would cap
occupancy.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import triton
from triton.runtime.interpreter import InterpretedFunction

from miscause.benchmarks import kernel_binaries
from miscause.kernels.triton_bands import bands_kernel

ROOT = Path(__file__).parents[1]
TRITON36 = ROOT / ".venv-triton36" / "bin" / "python"
SCRIPT = ROOT / "benchmarks" / "kernel_binaries.py"

# Registers per thread: the packed kernel runs 4-warp programs and keeps 3 per multiprocessor (65,536 registers)
# at 168; the others need only no spills.
MAX_REGISTERS = {"packed_kernel": 168}

pytestmark = [
    pytest.mark.skipif(not (kernel_binaries.TOOLS / "ptxas").exists(), reason="triton's bundled ptxas is missing"),
    pytest.mark.skipif(isinstance(bands_kernel, InterpretedFunction), reason="TRITON_INTERPRET=1: nothing to compile"),
]


def check_usage(usage: dict[str, dict[str, int]], version: str) -> None:
    """No spills (no local memory, no LDL/STL), registers within the kernel's bound: for every compiled launch."""
    assert usage, "no launch was compiled"
    for name, resources in usage.items():
        kernel = name.rsplit("-", 1)[-1]
        spilled = resources["LOCAL"] or resources["local_accesses"]
        assert not spilled, f"spills in {name} on triton {version}: {resources}"
        assert resources["REG"] <= MAX_REGISTERS.get(kernel, 255), f"registers of {name} on {version}: {resources}"


@pytest.mark.parametrize("case", kernel_binaries.CASES, ids=[case.name for case in kernel_binaries.CASES])
def test_launches_compile_for_sm90_here(case: kernel_binaries.Case) -> None:
    usage = kernel_binaries.case_usage(case)
    check_usage(usage, triton.__version__)
    expected = {launch.kernel.fn.__name__ for launch in kernel_binaries.case_launches(case)}
    assert {name.rsplit("-", 1)[-1] for name in usage} == expected


@pytest.mark.skipif(not TRITON36.exists(), reason="no .venv-triton36 (make triton36): Triton 3.6 compiles not checked")
def test_launches_compile_for_sm90_on_triton_3_6() -> None:
    result = subprocess.run([str(TRITON36), str(SCRIPT), "--json"], cwd=ROOT, capture_output=True, text=True,
                            timeout=840)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["triton"] == "3.6.0"
    check_usage(report["kernels"], report["triton"])
    launched = sum(len(kernel_binaries.case_launches(case)) for case in kernel_binaries.CASES)
    assert len(report["kernels"]) == launched


def test_launches_are_recorded_with_the_launchers_values() -> None:
    (launch,) = kernel_binaries.case_launches(kernel_binaries.MAIN)
    assert launch.kernel.fn.__name__ == "packed_kernel" and launch.grid == (16384 // launch.kwargs["IMAGES"],)
    # N, C, C_SAL, k, radius as the launcher passes them: C_SAL and radius equal 1 and become constants.
    assert launch.args[7:] == (16384, 3, 1, 52, 1)
    assert launch.kwargs["EVEN"] and not launch.kwargs["DEBUG"]


def test_sass_counts_find_the_bisection_round_and_the_fill(capsys: pytest.CaptureFixture[str]) -> None:
    assert kernel_binaries.main(["--sass"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    parts = {row[0].strip(): [cell.strip() for cell in row[1:]] for row in rows[1:]}
    assert [name.split()[0] for name in parts] == ["whole", "bisection", "fill,"], parts
    whole, round_, fill = (list(map(int, cells[:3])) for cells in parts.values())
    assert whole[0] > round_[0] > 0 and round_[1] > 0 and fill[0] > 0 and fill[1] == 0
