"""benchmarks/gpu/check.sh, the prepared command for a lent GPU: valid bash, its steps and limits, its usage."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu" / "check.sh"
STEPS = ("versions", "install", "exactness", "bench-kernels", "kernel-tests", "nsight", "bench-model",
         "bench-serve-targets")

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
    assert all(0 < int(limit) <= 420 for _, limit in steps)
    assert "benchmarks/gpu/exactness.py" in result.stdout and "bench serve --targets" in result.stdout
    assert list(tmp_path.iterdir()) == [], "a dry run writes nothing"


def test_chosen_steps_only(tmp_path: Path) -> None:
    result = dry_run(tmp_path, CHECK_STEPS="nsight exactness")
    assert re.findall(r"^step (\S+)", result.stdout, re.MULTILINE) == ["versions", "install", "exactness", "nsight"]


def test_budget_caps_every_step(tmp_path: Path) -> None:
    result = dry_run(tmp_path, CHECK_BUDGET_SECONDS="60")
    assert {int(limit) for limit in re.findall(r"\(at most (\d+) s\)", result.stdout)} <= set(range(1, 61))


def test_needs_out() -> None:
    result = subprocess.run(["bash", str(SCRIPT)], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and "usage: OUT=DIR" in result.stderr
