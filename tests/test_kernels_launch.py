"""The Triton kernel's launch-side helpers, which need neither a GPU nor the interpreter."""

from __future__ import annotations

import contextlib

import torch

from miscause.kernels.triton_erase import device_guard


def test_launch_makes_the_tensors_device_current() -> None:
    guard = device_guard(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert isinstance(device_guard(torch.device("cpu")), contextlib.nullcontext)
