"""The Triton kernel compiles to a CUDA binary for an H100-class target, on a machine without a GPU.

The interpreter runs a kernel as Python and accepts some programs the compiler rejects (a reassigned
constexpr, a branch whose two sides give a variable different types, integer arguments that the launcher
specialises to constants). Compiling each launch configuration ahead of time catches those in CI.
"""

from __future__ import annotations

import os

import pytest
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.interpreter import InterpretedFunction

from miscause.kernels.triton_erase import _erase_kernel, launch_config

PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
POINTERS = ("images", "saliency", "fill", "erased", "mask", "nonfinite")
INTEGERS = ("C", "C_SAL", "H", "W", "k", "radius")


def signature(images: str, saliency: str, ones: tuple[str, ...]) -> dict[str, str]:
    """Argument types by name, as the launcher would see them; integer arguments equal to 1 become constants."""
    pointer_types = {"images": images, "saliency": saliency, "fill": images, "erased": images, "mask": "u8",
                     "nonfinite": "i32"}
    types = {name: f"*{pointer_types[name]}" for name in POINTERS}
    types.update({name: "constexpr" if name in ones else "i32" for name in INTEGERS})
    types.update({name: "constexpr" for name in ("FROM_GRADIENT", "BLOCK", "BAND", "BLOCK_W")})
    assert list(types) == _erase_kernel.arg_names, "the kernel's arguments changed: update this test"
    return types


@pytest.mark.skipif(not os.path.exists(PTXAS), reason="triton's bundled ptxas is missing")
@pytest.mark.skipif(isinstance(_erase_kernel, InterpretedFunction), reason="TRITON_INTERPRET=1: nothing to compile")
@pytest.mark.parametrize(("images", "saliency", "from_gradient", "height", "width", "ones"), [
    ("fp32", "fp32", False, 32, 32, ()),
    ("bf16", "bf16", True, 224, 224, ()),
    ("fp16", "fp32", False, 1, 1, INTEGERS),
], ids=["fp32-32x32", "bf16-gradient-224x224", "fp16-1x1-constants"])
def test_kernel_compiles_for_sm90(images: str, saliency: str, from_gradient: bool, height: int, width: int,
                                  ones: tuple[str, ...]) -> None:
    config = launch_config(height, width)
    num_warps = config.pop("num_warps")
    constants = {name: 1 for name in ones} | {"FROM_GRADIENT": from_gradient, **config}
    source = ASTSource(fn=_erase_kernel, signature=signature(images, saliency, ones), constexprs=constants)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    assert compiled.asm["cubin"] and compiled.metadata.num_warps == num_warps
