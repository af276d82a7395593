"""benchmarks/gpu/check.sh, the prepared command for a lent GPU: valid bash, its steps and limits, its usage."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu" / "check.sh"
STEPS = ("versions", "install", "main-case", "binaries", "exactness", "kernel-tests", "bench-kernels", "nsight",
         "bench-model", "bench-serve-targets")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and timeout")


def dry_run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """The script's --dry-run with OUT in tmp_path."""
    return subprocess.run(["bash", str(SCRIPT), "--dry-run"], env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path),
                                                                   **env},
                          capture_output=True, text=True, timeout=30)


def test_script_parses() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)


def test_dry_run_lists_every_step_with_a_limit_inside_the_budget(tmp_path: Path) -> None:
    result = dry_run(tmp_path)
    assert result.returncode == 0, result.stderr
    steps = re.findall(r"^step (\S+) \(at most (\d+) s\)", result.stdout, re.MULTILINE)
    assert [name for name, _ in steps] == list(STEPS)
    assert all(0 < int(limit) for _, limit in steps)
    assert sum(int(limit) for _, limit in steps) <= 420, "the steps' limits must add up to the budget"
    assert list(tmp_path.iterdir()) == [], "a dry run writes nothing"


def test_steps_run_in_a_child_shell_not_as_commands() -> None:
    """`timeout` cannot run a shell function: every step goes through `bash -c` with the functions exported."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    assert 'timeout --signal=TERM --kill-after=5 "$limit" bash -c \'"$@"\'' in text
    functions = re.findall(r"^step \S+ (\S+)$", text, re.MULTILINE)
    exported = " ".join(re.findall(r"^export -f (.*)$", text, re.MULTILINE)).split()
    assert len(functions) == len(STEPS) and set(functions) <= set(exported), (functions, exported)


def test_chosen_steps_only(tmp_path: Path) -> None:
    result = dry_run(tmp_path, CHECK_STEPS="nsight exactness")
    assert re.findall(r"^step (\S+)", result.stdout, re.MULTILINE) == ["versions", "install", "exactness", "nsight"]


def test_budget_scales_every_step(tmp_path: Path) -> None:
    result = dry_run(tmp_path, CHECK_BUDGET_SECONDS="120")
    limits = [int(limit) for limit in re.findall(r"\(at most (\d+) s\)", result.stdout)]
    assert len(limits) == len(STEPS) and sum(limits) <= 120 and min(limits) >= 1


def test_limits_can_be_set_per_step(tmp_path: Path) -> None:
    result = dry_run(tmp_path, CHECK_LIMITS="bench-kernels=25 exactness=9")
    limits = dict(re.findall(r"^step (\S+) \(at most (\d+) s\)", result.stdout, re.MULTILINE))
    assert limits["bench-kernels"] == "25" and limits["exactness"] == "9"


def test_needs_out() -> None:
    result = subprocess.run(["bash", str(SCRIPT)], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and "usage: OUT=DIR" in result.stderr
