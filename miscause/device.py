"""Device and precision choices shared by the jobs, the service and the benchmarks."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from miscause.errors import MiscauseError


def pick_device(name: str = "auto", rank: int = 0) -> torch.device:
    """`auto` is CUDA (this rank's GPU) when present, else the CPU; a named CUDA device must exist."""
    if name == "auto":
        return torch.device(f"cuda:{rank % torch.cuda.device_count()}") if torch.cuda.is_available() \
            else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MiscauseError(f"unknown device {name!r}: auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MiscauseError(f"device {name} requested but torch sees no CUDA device")
    return device


def bf16_supported(device: torch.device) -> bool:
    """bf16 where the hardware computes it natively: CUDA with bf16, or a CPU with AVX512-BF16/AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast where the hardware computes bf16 natively, else full precision."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_supported(device))


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device) -> str:
    """The device in words, for records of where something ran: the GPU's name, or the CPU's and its threads."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({cpu_model()}, {torch.get_num_threads()} threads)"
