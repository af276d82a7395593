"""The Triton kernels compile to CUDA binaries for an H100-class target, on a machine without a GPU.

The interpreter runs a kernel as Python and accepts some programs the compiler rejects (a reassigned
constexpr, a branch whose two sides give a variable different types, integer arguments that the launcher
specialises to constants). Compiling each launch configuration ahead of time catches those in CI, and the
binary's resource usage shows spills to local memory and register counts that would cap occupancy.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.interpreter import InterpretedFunction

from miscause.kernels.triton_bands import bands_config, bands_kernel, radix_passes
from miscause.kernels.triton_keys import KEY_BITS
from miscause.kernels.triton_packed import packed_config, packed_kernel
from miscause.kernels.triton_split import split_config, split_fill_kernel, split_pass_kernel, split_resolve_kernel

TOOLS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
POINTERS = {"images": "images", "fill": "images", "erased": "images", "saliency": "saliency", "mask": "u8",
            "nonfinite": "i32", "anchors": "i32", "counters": "i32", "slices": "i32", "state": "i32"}
INTEGERS = {"N", "C", "C_SAL", "H", "W", "k", "radius"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def signature(kernel: triton.JITFunction, images: str, saliency: str, ones: tuple[str, ...],
              constants: dict) -> dict[str, str]:
    """Argument types by name, as the launcher would see them; integer arguments equal to 1 become constants."""
    types = {}
    for name in kernel.arg_names:
        if name in POINTERS:
            types[name] = "*" + {"images": images, "saliency": saliency}.get(POINTERS[name], POINTERS[name])
        elif name in constants or name in ones:
            types[name] = "constexpr"
        else:
            assert name in INTEGERS, f"the kernel's argument {name} is new: update this test"
            types[name] = "i32"
    return types


def launches(variant: str, shape: tuple[int, int, int], saliency: str) -> list[tuple[triton.JITFunction, dict]]:
    """Each kernel a variant launches for a shape, with its block constants and warps."""
    n, height, width = shape
    key_bits = KEY_BITS[DTYPES[saliency]]
    if variant == "packed":
        return [(packed_kernel, {**packed_config(n, height, width), "H": height, "W": width, "KEY_BITS": key_bits})]
    if variant == "bands":
        return [(bands_kernel, {**bands_config(height, width), "KEY_BITS": key_bits})]
    config = {**split_config(height, width), "KEY_BITS": key_bits}
    return ([(split_pass_kernel, {**config, "BYTE": byte}) for byte in range(radix_passes(key_bits))]
            + [(split_resolve_kernel, config), (split_fill_kernel, config)])


def resource_usage(cubin: bytes, tmp_path: Path) -> dict[str, int]:
    """REG, LOCAL (spill bytes), SHARED ... of the binary's one function, from cuobjdump."""
    path = tmp_path / "kernel.cubin"
    path.write_bytes(cubin)
    listing = subprocess.run([os.path.join(TOOLS, "cuobjdump"), "--dump-resource-usage", str(path)],
                             capture_output=True, text=True, check=True).stdout
    return {name: int(value) for name, value in re.findall(r"([A-Z]+(?:\[0\])?):(\d+)", listing)}


@pytest.mark.skipif(not os.path.exists(os.path.join(TOOLS, "ptxas")), reason="triton's bundled ptxas is missing")
@pytest.mark.skipif(isinstance(bands_kernel, InterpretedFunction), reason="TRITON_INTERPRET=1: nothing to compile")
@pytest.mark.parametrize(("variant", "images", "saliency", "from_gradient", "shape", "ones", "max_registers"), [
    ("packed", "fp32", "fp32", False, (16384, 32, 32), (), 128),
    ("packed", "bf16", "bf16", True, (16383, 32, 32), (), 128),
    ("packed", "fp16", "fp32", False, (1, 1, 1), ("N", "C", "C_SAL", "k", "radius"), 255),
    ("packed", "fp32", "fp32", False, (2, 64, 64), (), 255),
    ("bands", "fp32", "fp32", False, (256, 32, 32), (), 255),
    ("bands", "bf16", "bf16", True, (256, 224, 224), (), 255),
    ("bands", "fp16", "fp32", False, (1, 1, 1), ("C", "C_SAL", "H", "W", "k", "radius"), 255),
    ("split", "fp32", "fp32", False, (256, 224, 224), (), 255),
    ("split", "bf16", "bf16", True, (256, 224, 224), (), 255),
    ("split", "fp16", "fp16", False, (3, 128, 200), (), 255),
    ("split", "fp16", "fp32", False, (1, 1, 1), ("C", "C_SAL", "H", "W", "k", "radius"), 255),
], ids=["packed-fp32-32x32", "packed-bf16-gradient-odd-N", "packed-fp16-1x1-constants", "packed-fp32-64x64",
        "bands-fp32-32x32", "bands-bf16-gradient-224x224", "bands-fp16-1x1-constants", "split-fp32-224x224",
        "split-bf16-gradient-224x224", "split-fp16-128x200", "split-fp16-1x1-constants"])
def test_kernel_compiles_for_sm90_without_spills(variant: str, images: str, saliency: str, from_gradient: bool,
                                                 shape: tuple[int, int, int], ones: tuple[str, ...],
                                                 max_registers: int, tmp_path: Path) -> None:
    for kernel, config in launches(variant, shape, saliency):
        num_warps = config["num_warps"]
        every = {name: 1 for name in ones} | {"FROM_GRADIENT": from_gradient, "DEBUG": False, **config}
        constants = {name: value for name, value in every.items() if name in kernel.arg_names}
        source = ASTSource(fn=kernel, signature=signature(kernel, images, saliency, ones, constants),
                           constexprs=constants)
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
        name = kernel.fn.__name__
        assert compiled.asm["cubin"] and compiled.metadata.num_warps == num_warps, name
        usage = resource_usage(compiled.asm["cubin"], tmp_path)
        assert usage["LOCAL"] == 0 and usage["STACK"] == 0, f"spills in {name}: {usage}"
        assert usage["REG"] <= max_registers, f"registers of {name}: {usage}"
