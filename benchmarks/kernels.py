"""`miscause bench kernels`: the fused top-p% box-erasure op, Triton against PyTorch and the memory roofline.

Every case (N images of H x W, one images dtype) is first checked, then timed:

- `triton`: `miscause.kernels.erase(..., implementation="triton")` on a float32 saliency map [N, H, W] (the
  kernel chosen for the size, then its per-image status read back and checked: one host sync);
- `triton_unchecked`: the same launch without reading the status back (`erase_unchecked`);
- `triton_packed`, `triton_bands`, `triton_split`: each kernel forced (`implementation="packed"`, ...),
  unchecked (the packed kernel only for sides up to 64, the split kernel only for images too big for it);
- `triton_gradient`: `erase(..., from_gradient=True, implementation="triton")` on the raw gradient
  [N, C, H, W] (images' dtype), the channel reduction fused into the kernel;
- `eager`: `erase(..., implementation="reference")`, the PyTorch reference;
- `compile`: `torch.compile` of the reference's core (its argument checks stay outside the compiled graph), timed
  on the first case only: it recompiles for every shape and dtype;
- `roofline`: the bytes the op must move (images read, erased images written, saliency read, mask written)
  divided by the device-to-device copy bandwidth measured here.

The check: Triton's and the compiled outputs equal the eager reference's exactly. Timing: on a GPU the median
of `triton.testing.do_bench` (warm-up calls excluded, L2 flushed between calls), each call on the next of
`--sets` input sets in turn; on a CPU the median of `--calls` timed calls, rotating the same way, and only
the PyTorch paths (the Triton kernel needs a GPU, and a CPU copy roofline says little about a compute-bound
op). The eager path and `triton`/`triton_gradient` include their NaN/Inf check and its host sync; the compiled
core and the unchecked Triton paths do not. On a GPU the registers and spills of every compiled Triton kernel
are listed too (from the launched binaries). The result file is written after every case (`"complete": false`
until the last), so a run stopped midway keeps what it measured; a case that fails is recorded and the rest run.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch
import triton

from miscause.benchmarks.report import Run, Table, add_output_arguments
from miscause.defaults import BOX, TOP_PERCENT
from miscause.errors import MiscauseError
from miscause.kernels import erase, erase_unchecked
from miscause.kernels.erase_spec import check_erase_args
from miscause.kernels.reference import erase_core
from miscause.kernels.triton_erase import KERNELS
from miscause.kernels.triton_shared import MAX_SIDE

CASES = "4096x32x32,16384x32x32,256x224x224"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
IMPLS = ("triton", "triton_unchecked", "triton_packed", "triton_bands", "triton_split", "triton_gradient", "eager",
         "compile")
GPU_ONLY = ("triton", "triton_unchecked", "triton_packed", "triton_bands", "triton_split", "triton_gradient")

Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images, saliency, gradient


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--cases", default=CASES, help=f"comma-separated NxHxW (default: {CASES})")
    parser.add_argument("--dtypes", default="float32,bfloat16",
                        help=f"images dtypes, comma-separated: {', '.join(DTYPES)} (default: float32,bfloat16)")
    parser.add_argument("--impls", default="all", help=f"comma-separated, or all: {', '.join(IMPLS)}")
    parser.add_argument("--channels", type=int, default=3, help="image channels (default: 3)")
    parser.add_argument("--top-percent", type=float, default=TOP_PERCENT,
                        help="p, percent of pixels anchored (default: %(default)g)")
    parser.add_argument("--box", type=int, default=BOX, help="box side, odd (default: %(default)s)")
    parser.add_argument("--sets", type=int, default=3, help="input sets rotated between calls (default: 3)")
    parser.add_argument("--calls", type=int, default=5, help="timed calls per point on CPU (default: 5)")
    add_output_arguments(parser)


def parse_cases(text: str) -> list[tuple[int, int, int]]:
    """`NxHxW,...` -> [(N, H, W), ...], every number positive."""
    cases = []
    for item in text.split(","):
        try:
            n, h, w = (int(v) for v in item.strip().lower().split("x"))
        except ValueError:
            raise MiscauseError(f"a case is NxHxW with three integers, got {item!r}") from None
        if min(n, h, w) < 1:
            raise MiscauseError(f"case sizes must be positive, got {item!r}")
        cases.append((n, h, w))
    return cases


def parse_names(text: str, choices: Sequence[str], what: str) -> list[str]:
    """Comma-separated names, `all` for every choice; an unknown name is a clear error."""
    names = list(choices) if text == "all" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in choices]
    if unknown or not names:
        raise MiscauseError(f"unknown {what} {', '.join(unknown) or text!r}: choose from {', '.join(choices)}")
    return names


def make_inputs(n: int, c: int, h: int, w: int, dtype: torch.dtype, device: torch.device,
                generator: torch.Generator) -> Inputs:
    """Normal images and gradient in the images' dtype, a float32 saliency map (what `saliency` returns)."""
    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator).to(device)
    return normal(n, c, h, w).to(dtype), normal(n, h, w), normal(n, c, h, w).to(dtype)


def bytes_moved(inputs: Inputs, from_gradient: bool = False) -> int:
    """What the op must read and write: images in, erased images out, the ranking input in, the mask out."""
    images, saliency, gradient = inputs
    ranking = gradient if from_gradient else saliency
    n, _, h, w = images.shape
    return 2 * images.numel() * images.element_size() + ranking.numel() * ranking.element_size() + n * h * w


def implementations(top_percent: float, box: int, first: Inputs) -> dict[str, Callable[[Inputs], object]]:
    """Each implementation as a call on one input set."""
    args = check_erase_args(first[0], first[1], top_percent, box, None)
    compiled = torch.compile(erase_core)
    def unchecked(implementation: str) -> Callable[[Inputs], object]:
        return lambda x: erase_unchecked(x[0], x[1], top_percent, box, implementation=implementation)[:2]
    return {
        "triton": lambda x: erase(x[0], x[1], top_percent, box, implementation="triton"),
        "triton_unchecked": unchecked("triton"),
        "triton_packed": unchecked("packed"),
        "triton_bands": unchecked("bands"),
        "triton_split": unchecked("split"),
        "triton_gradient": lambda x: erase(x[0], x[2], top_percent, box, from_gradient=True, implementation="triton"),
        "eager": lambda x: erase(x[0], x[1], top_percent, box, implementation="reference"),
        "compile": lambda x: compiled(x[0], x[1], args)[:2],
    }


def applies(name: str, height: int, width: int) -> bool:
    """Whether an implementation takes this size: the packed kernel sides up to MAX_SIDE, the split kernel the rest."""
    small = max(height, width) <= MAX_SIDE
    return {"triton_packed": small, "triton_split": not small}.get(name, True)


def kernel_resources() -> list[dict]:
    """Registers and spills of every Triton erasure kernel compiled and launched in this process (GPU only)."""
    rows = []
    for kernel in KERNELS:
        for cache in getattr(kernel, "device_caches", {}).values():
            for compiled in cache[0].values():
                metadata = compiled.metadata
                rows.append({"kernel": kernel.fn.__name__, "num_warps": metadata.num_warps,
                             "registers": getattr(compiled, "n_regs", None),
                             "spills": getattr(compiled, "n_spills", None), "shared_bytes": metadata.shared})
    return rows


def check(calls: dict[str, Callable[[Inputs], object]], inputs: Inputs, top_percent: float, box: int) -> list[str]:
    """Names of the implementations whose (erased, mask) differ from the eager reference's on `inputs`."""
    want = erase(inputs[0], inputs[1], top_percent, box, implementation="reference")
    want_from_gradient = erase(inputs[0], inputs[2], top_percent, box, from_gradient=True, implementation="reference")
    wrong = []
    for name, call in calls.items():
        expected = want_from_gradient if name == "triton_gradient" else want
        if not all(torch.equal(a, b) for a, b in zip(call(inputs), expected, strict=True)):
            wrong.append(name)
    return wrong


def median_ms(call: Callable[[Inputs], object], sets: list[Inputs], device: torch.device, calls: int) -> float:
    """Median milliseconds per call, each call on the next input set; warm-up calls excluded."""
    turn = itertools.count()

    def step() -> object:
        return call(sets[next(turn) % len(sets)])
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(step, warmup=25, rep=100, return_mode="median"))
    for _ in range(len(sets)):
        step()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def copy_bandwidth(device: torch.device) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write) of a 1 GiB buffer, median of do_bench."""
    import triton.testing

    source = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    ms = triton.testing.do_bench(lambda: target.copy_(source), warmup=25, rep=200, return_mode="median")
    return 2 * source.numel() / (ms / 1000)


def measure_case(n: int, h: int, w: int, dtype_name: str, impls: list[str], args: argparse.Namespace,
                 device: torch.device, bandwidth: float | None) -> list[dict]:
    """Check, then time every implementation on one case; one point per implementation (and the roofline)."""
    generator = torch.Generator().manual_seed(n * 7919 + h)
    sets = [make_inputs(n, args.channels, h, w, DTYPES[dtype_name], device, generator) for _ in range(args.sets)]
    every = implementations(args.top_percent, args.box, sets[0])
    calls = {name: every[name] for name in impls if applies(name, h, w)}
    wrong = check(calls, sets[0], args.top_percent, args.box)
    if wrong:
        raise MiscauseError(f"{', '.join(wrong)} differ from the eager reference on {n}x{h}x{w} {dtype_name}")
    base = {"n": n, "height": h, "width": w, "dtype": dtype_name, "channels": args.channels}
    points = []
    for name in calls:
        ms = median_ms(calls[name], sets, device, args.calls)
        moved = bytes_moved(sets[0], from_gradient=name == "triton_gradient")
        points.append({**base, "impl": name, "ms": ms, "images_per_s": n / (ms / 1000), "bytes": moved,
                       "gb_per_s": moved / (ms / 1000) / 1e9, "checked": True})
    if bandwidth is not None:
        moved = bytes_moved(sets[0])
        ms = moved / bandwidth * 1000
        points.append({**base, "impl": "roofline", "ms": ms, "images_per_s": n / (ms / 1000), "bytes": moved,
                       "gb_per_s": bandwidth / 1e9, "checked": None})
    return points


def table(points: list[dict], bandwidth: float | None) -> Table:
    """One row per case and implementation: time, images/s, GB/s, share of copy bandwidth, speed-up on eager."""
    columns = ["N", "HxW", "dtype", "impl", "ms", "images/s", "GB/s"]
    columns += ["% copy bw"] if bandwidth else []
    columns += ["x eager", "x compile"]
    result = Table("Top-p% box erasure (median ms per call)", columns)
    for point in points:
        same_case = [p for p in points if (p["n"], p["height"], p["dtype"]) == (point["n"], point["height"],
                                                                                  point["dtype"])]
        ms = {p["impl"]: p["ms"] for p in same_case}
        row = [point["n"], f"{point['height']}x{point['width']}", point["dtype"], point["impl"], point["ms"],
               point["images_per_s"], point["gb_per_s"]]
        row += [100 * point["gb_per_s"] * 1e9 / bandwidth] if bandwidth else []
        row += [ms["eager"] / point["ms"] if "eager" in ms else None,
                ms["compile"] / point["ms"] if "compile" in ms else None]
        result.rows.append(row)
    return result


def run(args: argparse.Namespace) -> int:
    from miscause.device import pick_device

    device = pick_device(args.device)
    cases = parse_cases(args.cases)
    dtypes = parse_names(args.dtypes, list(DTYPES), "dtype")
    impls = parse_names(args.impls, IMPLS, "implementation")
    notes = []
    if device.type != "cuda":
        skipped = [name for name in impls if name in GPU_ONLY]
        impls = [name for name in impls if name not in GPU_ONLY]
        if skipped:
            notes.append(f"no GPU: {', '.join(skipped)} not timed (the Triton kernel runs on CPU only under the "
                         "interpreter, which measures nothing); no roofline")
        if not impls:
            raise MiscauseError("nothing to time on CPU: choose eager and/or compile")
    if args.sets < 1 or args.calls < 1:
        raise MiscauseError("--sets and --calls must be at least 1")
    settings = {"cases": args.cases, "dtypes": dtypes, "impls": impls, "channels": args.channels,
                "top_percent": args.top_percent, "box": args.box, "sets": args.sets, "saliency_dtype": "float32",
                "timing": "do_bench median" if device.type == "cuda" else f"median of {args.calls} calls",
                "threads": torch.get_num_threads(), "triton": triton.__version__}
    command = getattr(args, "command", None)
    record = Run("kernels", settings, device=str(device), **({"command": command} if command else {}))
    bandwidth = copy_bandwidth(device) if device.type == "cuda" else None
    notes.append(f"top_percent={args.top_percent}, box={args.box}, {args.channels} channels, float32 saliency; "
                 "outputs checked equal to the eager reference before timing")
    if "triton_packed" in impls and any(max(h, w) > MAX_SIDE for _, h, w in cases):
        notes.append(f"triton_packed is timed only where both sides are at most {MAX_SIDE}")
    if "triton_split" in impls and any(max(h, w) <= MAX_SIDE for _, h, w in cases):
        notes.append(f"triton_split is timed only where a side is over {MAX_SIDE}")
    if "compile" in impls and len(cases) * len(dtypes) > 1:
        notes.append("compile (torch.compile recompiles for every shape and dtype) is timed on the first case only")
    points, failures = [], []
    out = None if args.no_write else args.out
    for index, ((n, h, w), dtype_name) in enumerate(itertools.product(cases, dtypes)):
        case_impls = [name for name in impls if name != "compile" or index == 0]
        try:
            points += measure_case(n, h, w, dtype_name, case_impls, args, device, bandwidth)
            print(f"measured {n}x{h}x{w} {dtype_name}", file=sys.stderr, flush=True)
        except (MiscauseError, RuntimeError, ValueError) as error:  # one case's failure must not lose the others
            failures.append({"case": f"{n}x{h}x{w} {dtype_name}", "error": f"{type(error).__name__}: {error}"})
            print(f"FAILED {n}x{h}x{w} {dtype_name}: {error}", file=sys.stderr, flush=True)
        tables, data = results(points, failures, bandwidth, device)
        record.write(tables, {**data, "complete": False}, notes, out)
    tables, data = results(points, failures, bandwidth, device)
    record.finish(tables, {**data, "complete": True}, notes, out)
    return 1 if failures else 0


def results(points: list[dict], failures: list[dict], bandwidth: float | None,
            device: torch.device) -> tuple[list[Table], dict]:
    """The tables and data of the cases measured so far (and of those that failed)."""
    resources = kernel_resources() if device.type == "cuda" else []
    data = {"points": points, "failures": failures, "copy_bandwidth_bytes_per_s": bandwidth,
            "kernel_resources": resources}
    tables = [table(points, bandwidth)]
    if resources:
        tables.insert(0, Table("Compiled Triton kernels", ["kernel", "warps", "registers", "spills", "shared bytes"],
                               [[r["kernel"], r["num_warps"], r["registers"], r["spills"], r["shared_bytes"]]
                                for r in resources]))
    if failures:
        tables.append(Table("Failed cases", ["case", "error"], [[f["case"], f["error"]] for f in failures]))
    return tables, data


def main(argv: list[str] | None = None) -> int:
    """Run as a script: `python benchmarks/kernels.py [options]`."""
    parser = argparse.ArgumentParser(prog="benchmarks/kernels.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.command = shlex.join(["python", "benchmarks/kernels.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args)
    except MiscauseError as error:
        print(f"benchmarks/kernels.py: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
