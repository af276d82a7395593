"""The erasure kernels' binaries as the launcher builds them, compiled for sm_90 on a machine without a GPU.

The product's own entry point (`miscause.kernels.erase_unchecked`, the Triton kernels named) runs on meta tensors
with every Triton launch recorded instead of run; each recorded launch is then specialised by the kernel's own
binder, exactly as `JITFunction.run` does on a GPU (pointers 16-byte aligned, integers divisible by 16 marked
so, integers equal to 1 made constants), and compiled for an H100-class target. A meta tensor's address is 0,
which is aligned like every CUDA allocation PyTorch makes.

    python benchmarks/kernel_binaries.py                 # every case: registers, spills, per Triton version
    python benchmarks/kernel_binaries.py --sass          # the main case's SASS counts per image
    python benchmarks/kernel_binaries.py --json          # every case's resource usage as JSON (for tests)

Only the Triton installed in the running interpreter is used, so the same file checks any release.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import JITFunction, create_function_from_signature

from miscause.kernels import erase_unchecked, triton_erase

TARGET = GPUTarget("cuda", 90, 32)
TOOLS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    """One erasure call: N images of C x H x W in a dtype, a saliency map or a raw gradient of C_SAL channels."""

    name: str
    shape: tuple[int, int, int, int]
    images: str
    ranking: str
    top_percent: float
    box: int
    gradient_channels: int = 0
    variant: str | None = None


# Each kernel configuration the product and the device checks launch: every kernel, every ranking dtype's key
# bits, the gradient form, padded and unpadded packed blocks, both word widths, and integer arguments equal to
# 1, divisible by 16 or neither. `variant` forces a kernel as the exactness check and the benchmark do.
CASES = (
    Case("main-packed-fp32-32x32", (16384, 3, 32, 32), "fp32", "fp32", 5, 3),
    Case("packed-bf16-gradient-odd-N", (16383, 3, 32, 32), "bf16", "bf16", 5, 3, gradient_channels=3),
    Case("packed-fp16-28x28-padded", (7, 3, 28, 28), "fp16", "fp16", 0.1, 5),
    Case("packed-fp32-64x64", (2, 3, 64, 64), "fp32", "fp32", 5, 5),
    Case("packed-fp16-1x1-ones", (1, 1, 1, 1), "fp16", "fp32", 100, 1),
    Case("bands-fp32-32x32-forced", (256, 3, 32, 32), "fp32", "fp32", 5, 3, variant="bands"),
    Case("bands-bf16-gradient-100x100", (16, 3, 100, 100), "bf16", "bf16", 5, 3, gradient_channels=3),
    Case("bands-fp16-65x65-ones", (1, 1, 65, 65), "fp16", "fp32", 100, 3),
    Case("split-fp32-224x224", (256, 3, 224, 224), "fp32", "fp32", 5, 3),
    Case("split-bf16-gradient-224x224", (256, 3, 224, 224), "bf16", "bf16", 5, 3, gradient_channels=3),
    Case("split-fp16-128x200", (3, 3, 128, 200), "fp16", "fp16", 30, 5),
    Case("split-fp32-32x32-forced", (4096, 3, 32, 32), "fp32", "fp32", 5, 3, variant="split"),
)
MAIN = CASES[0]


@dataclass(frozen=True)
class Launch:
    """A recorded launch: the kernel, its positional and keyword arguments, and its grid."""

    kernel: JITFunction
    args: tuple
    kwargs: dict
    grid: tuple


@contextlib.contextmanager
def recording() -> Iterator[list[Launch]]:
    """Record every Triton launch made inside the block instead of running it."""
    launches: list[Launch] = []

    def record(kernel: JITFunction, *args: object, grid: tuple, warmup: bool, **kwargs: object) -> None:
        launches.append(Launch(kernel, args, kwargs, grid))

    original = JITFunction.run
    JITFunction.run = record
    try:
        yield launches
    finally:
        JITFunction.run = original


def case_launches(case: Case) -> list[Launch]:
    """The launches the product's launcher makes for a case, on meta tensors (nothing is allocated or run)."""
    n, c, h, w = case.shape
    images = torch.empty(case.shape, dtype=DTYPES[case.images], device="meta")
    ranking_shape = (n, case.gradient_channels, h, w) if case.gradient_channels else (n, h, w)
    ranking = torch.empty(ranking_shape, dtype=DTYPES[case.ranking], device="meta")
    with recording() as launches, _meta_allowed():
        erase_unchecked(images, ranking, case.top_percent, case.box, from_gradient=bool(case.gradient_channels),
                        implementation=case.variant or "triton")
    return launches


@contextlib.contextmanager
def _meta_allowed() -> Iterator[None]:
    """Let the launcher take meta tensors: it accepts non-CUDA tensors only for the interpreter."""
    original = triton_erase.InterpretedFunction
    triton_erase.InterpretedFunction = JITFunction
    try:
        yield
    finally:
        triton_erase.InterpretedFunction = original


def compile_launch(launch: Launch, target: GPUTarget = TARGET) -> triton.compiler.CompiledKernel:
    """Compile a recorded launch as `JITFunction.run` would on a GPU of `target`: its binder's specialisation."""
    backend = make_backend(target)
    binder = create_function_from_signature(launch.kernel.signature, launch.kernel.params, backend)
    kwargs = {"debug": False, **launch.kwargs}
    bound, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = launch.kernel._pack_args(backend, kwargs, bound, specialization, options)
    source = ASTSource(launch.kernel, signature, constexprs, attrs)
    return triton.compile(source, target=target, options=options.__dict__)


def _tool(name: str, cubin: bytes, *flags: str) -> str:
    """Run one of triton's bundled CUDA binary tools on a cubin; its output."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kernel.cubin"
        path.write_bytes(cubin)
        return subprocess.run([str(TOOLS / name), *flags, str(path)], capture_output=True, text=True,
                              check=True).stdout


def resource_usage(cubin: bytes) -> dict[str, int]:
    """REG, LOCAL (spill bytes), STACK, SHARED ... of the binary's one function, from cuobjdump."""
    listing = _tool("cuobjdump", cubin, "--dump-resource-usage")
    return {name: int(value) for name, value in re.findall(r"([A-Z]+(?:\[0\])?):(\d+)", listing)}


def sass(cubin: bytes) -> list[tuple[int, str]]:
    """The binary's SASS instructions as (address, instruction), without encodings."""
    listing = _tool("cuobjdump", cubin, "--dump-sass")
    found = re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", listing)
    return [(int(address, 16), text.strip()) for address, text in found]


def sass_counts(instructions: list[tuple[int, str]]) -> dict[str, int]:
    """Instructions, shuffles, barriers and shared-memory accesses among SASS instructions."""
    opcodes = [_opcode(text) for _, text in instructions]
    return {"instructions": len(opcodes), "SHFL": sum(op.startswith("SHFL") for op in opcodes),
            "BAR.SYNC": sum(op.startswith("BAR.SYNC") for op in opcodes),
            "LDS/STS": sum(op.startswith(("LDS", "STS")) for op in opcodes)}


def _opcode(instruction: str) -> str:
    """The opcode of a SASS instruction, its predicate dropped: "@!P0 SHFL.BFLY PT, ..." -> "SHFL.BFLY"."""
    return re.sub(r"^@!?U?P\w+\s+", "", instruction).split()[0]


def loops(instructions: list[tuple[int, str]]) -> list[list[tuple[int, str]]]:
    """The body of each loop, outermost first: a branch back to an earlier address closes one."""
    bodies = []
    for address, text in instructions:
        target = re.search(r"\bBRA\s+(0x[0-9a-f]+)", text)
        if target and int(target.group(1), 16) < address:
            bodies.append([(at, line) for at, line in instructions if int(target.group(1), 16) <= at <= address])
    return sorted(bodies, key=len, reverse=True)


def case_usage(case: Case) -> dict[str, dict[str, int]]:
    """Each launch of a case compiled, by "case/launch number-kernel": its resource usage, its warps and its
    local-memory instructions (LDL/STL: spills; a STACK frame that none of them touches costs nothing)."""
    usage = {}
    for index, launch in enumerate(case_launches(case)):
        cubin = compile_launch(launch).asm["cubin"]
        local = sum(_opcode(text).startswith(("LDL", "STL")) for _, text in sass(cubin))
        usage[f"{case.name}/{index}-{launch.kernel.fn.__name__}"] = {
            **resource_usage(cubin), "num_warps": launch.kwargs["num_warps"], "local_accesses": local}
    return usage


def print_sass_counts() -> int:
    """The main case's packed binary: SASS counts of the whole kernel and of its loops, per program and per image."""
    (launch,) = case_launches(MAIN)
    instructions = sass(compile_launch(launch).asm["cubin"])
    images = launch.kwargs["IMAGES"]
    print(f"main case {MAIN.shape} {MAIN.images}, p={MAIN.top_percent:g}, b={MAIN.box}: packed_kernel, "
          f"{images} images per program, {launch.kwargs['num_warps']} warps, triton {triton.__version__}, sm_90")
    print("| part | instructions | SHFL | BAR.SYNC | LDS/STS | per image: instructions / SHFL / BAR.SYNC |")
    print("|---|---|---|---|---|---|")
    parts = {"whole kernel (static)": instructions}
    bodies = sorted(loops(instructions), key=len)
    named = {"bisection round of 4 key bits (smallest loop that shuffles)":
             next((body for body in bodies if sass_counts(body)["SHFL"]), None),
             "fill, one channel (the loop that stores and never shuffles)":
             next((body for body in bodies if _is_fill(body)), None)}
    parts.update({name: body for name, body in named.items() if body})
    for name, body in parts.items():
        counts = sass_counts(body)
        print(f"| {name} | {counts['instructions']} | {counts['SHFL']} | {counts['BAR.SYNC']} | {counts['LDS/STS']} | "
              f"{counts['instructions'] / images:.0f} / {counts['SHFL'] / images:.1f} / "
              f"{counts['BAR.SYNC'] / images:.1f} |")
    return 0


def _is_fill(body: list[tuple[int, str]]) -> bool:
    """A loop that stores to global memory and shuffles nothing: the per-channel fill."""
    texts = [text for _, text in body]
    return any("STG" in text for text in texts) and not any("SHFL" in text for text in texts)


def main(argv: list[str] | None = None) -> int:
    """Compile every case (or the main case) and print its resources, or the main case's SASS counts."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print every case's resource usage as JSON")
    parser.add_argument("--sass", action="store_true", help="print the main case's SASS counts per image")
    parser.add_argument("--cases", nargs="*", help="case names (default: all)")
    args = parser.parse_args(argv)
    cases = [case for case in CASES if not args.cases or case.name in args.cases]
    if args.sass:
        return print_sass_counts()
    results = {name: usage for case in cases for name, usage in case_usage(case).items()}
    if args.json:
        print(json.dumps({"triton": triton.__version__, "kernels": results}))
        return 0
    for name, usage in results.items():
        print(f"{name}: {usage['REG']} registers, {usage['LOCAL']} B local, {usage['SHARED']} B shared, "
              f"{usage['num_warps']} warps (triton {triton.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
