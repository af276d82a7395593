"""Runs test_kernels_triton.py under the Triton interpreter in a child process, on machines without a GPU.

TRITON_INTERPRET is read when a kernel is decorated, i.e. when triton-using modules are first imported, so
setting it inside this process (where other tests have already imported them) would not take effect, and
setting it globally would change how every other test runs. A child process gets it from its first line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TRITON_TESTS = Path(__file__).with_name("test_kernels_triton.py")


@pytest.mark.skipif(torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                    reason="test_kernels_triton.py runs directly in this process")
def test_triton_kernel_under_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", str(TRITON_TESTS)]
    result = subprocess.run(command, env=env, cwd=TRITON_TESTS.parents[1], capture_output=True, text=True,
                            timeout=840)
    report = result.stdout[-8000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert " passed" in result.stdout and "skipped" not in result.stdout, report
