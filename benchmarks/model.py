"""`miscause bench model`: forward throughput per architecture and batch size, four ways.

- `onnx`: ONNX Runtime on the model exported by the export job's own exporter (CUDA provider on GPU);
- `eager`: torch eager under inference mode;
- `compile`: torch.compile (inductor; mode reduce-overhead, i.e. CUDA graphs, on GPU);
- `gradient`: the service's gradient path, `miscause.kernels.saliency` (forward and backward to the input).

Networks are the zoo's, randomly initialised, fp32, bare (the served cifarnet adds flip test-time
augmentation inside its graph, which doubles its forward cost). Each point runs for `--seconds` after
warm-up calls (at least `--min-calls` calls, so the heaviest networks get few iterations on a CPU).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from miscause import repository
from miscause.benchmarks.measure import throughput
from miscause.benchmarks.report import Run, Table, add_output_arguments
from miscause.errors import MiscauseError

BACKENDS = ("onnx", "eager", "compile", "gradient")
IMAGE_SHAPE = (3, 32, 32)


def parse_list(text: str, choices: tuple[str, ...] | list[str], what: str) -> list[str]:
    """Comma-separated names, `all` for every choice; an unknown name is a clear error."""
    names = list(choices) if text == "all" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in choices]
    if unknown or not names:
        raise MiscauseError(f"unknown {what} {', '.join(unknown) or text!r}: choose from {', '.join(choices)}")
    return names


def parse_sizes(text: str) -> list[int]:
    """Comma-separated positive integers."""
    try:
        sizes = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise MiscauseError(f"batch sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise MiscauseError(f"batch sizes must be positive, got {text!r}")
    return sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from miscause.jobs.training import zoo

    parser.add_argument("--archs", default="all", help=f"comma-separated, or all: {', '.join(zoo.REGISTRY)}")
    parser.add_argument("--batch-sizes", default="1,16,64", help="comma-separated (default: 1,16,64)")
    parser.add_argument("--backends", default="all", help=f"comma-separated, or all: {', '.join(BACKENDS)}")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--seconds", type=float, default=1.0, help="measured time per point (default: 1)")
    parser.add_argument("--min-calls", type=int, default=2, help="fewest measured calls per point (default: 2)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch and ONNX Runtime (default: torch's)")
    add_output_arguments(parser)


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for the device's queued work (a no-op on CPU), so a call's time includes its compute."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def onnx_call(images: torch.Tensor, path: Path, threads: int) -> Callable[[], object]:
    """ONNX Runtime on `images` (host input, as the CPU service feeds it)."""
    session = repository.onnx_session(path, threads=threads)
    feed = {repository.INPUT_NAME: np.ascontiguousarray(images.cpu().numpy())}
    return lambda: session.run([repository.OUTPUT_NAME], feed)


def torch_call(model: torch.nn.Module, images: torch.Tensor, sync: Callable[[], None]) -> Callable[[], object]:
    def call():
        with torch.inference_mode():
            out = model(images)
        sync()
        return out
    return call


def gradient_call(model: torch.nn.Module, images: torch.Tensor, sync: Callable[[], None]) -> Callable[[], object]:
    """The service's saliency: gradient of the target class's logit with respect to the input."""
    from miscause import kernels

    target = torch.zeros(len(images), dtype=torch.long, device=images.device)

    def call():
        out = kernels.saliency(model, images, method="gradient", target=target)
        sync()
        return out
    return call


def measure_arch(arch: str, batch_sizes: list[int], backends: list[str], device: torch.device, threads: int,
                 args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Points (one per batch size and backend) and the one-off costs (export, compile) of one architecture."""
    from miscause.jobs.training import zoo
    from miscause.jobs.training.export import export_onnx

    torch.manual_seed(0)
    model = zoo.build(arch).eval()
    costs: dict = {}
    points: list[dict] = []
    sync = synchronizer(device)
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = Path(scratch) / repository.ONNX_FILE
        if "onnx" in backends:
            started = time.perf_counter()
            export_onnx(model, torch.randn(2, *IMAGE_SHAPE), onnx_path)
            costs["onnx_export_s"] = time.perf_counter() - started
        model = model.to(device)
        compiled = None
        if "compile" in backends:
            compiled = torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else None)
        for batch in batch_sizes:
            images = torch.randn(batch, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(batch)).to(device)
            for backend in backends:
                if backend == "onnx":
                    call = onnx_call(images, onnx_path, threads)
                elif backend == "eager":
                    call = torch_call(model, images, sync)
                elif backend == "compile":
                    call = torch_call(compiled, images, sync)
                    started = time.perf_counter()
                    call()
                    costs[f"compile_s_batch_{batch}"] = time.perf_counter() - started
                else:
                    call = gradient_call(model, images, sync)
                measured = throughput(call, batch, warmup=2, seconds=args.seconds, min_calls=args.min_calls)
                points.append({"arch": arch, "batch": batch, "backend": backend, "calls": measured.calls,
                               "images_per_s": measured.items_per_s, "ms_per_call": measured.ms_per_call})
                print(f"{arch:>13} batch {batch:>4} {backend:>8}: {measured.items_per_s:9.1f} images/s "
                      f"({measured.calls} calls, {measured.ms_per_call:.2f} ms each)", flush=True)
    return points, costs


def tables(points: list[dict], backends: list[str]) -> list[Table]:
    """One row per architecture and batch size, images/s per backend, and ONNX Runtime's speed-up on eager."""
    columns = ["arch", "batch", *(f"{b} img/s" for b in backends)]
    ratio = "onnx" in backends and "eager" in backends
    if ratio:
        columns.append("onnx/eager")
    table = Table("Forward and gradient throughput (images/s)", columns)
    keys = dict.fromkeys((p["arch"], p["batch"]) for p in points)
    rate = {(p["arch"], p["batch"], p["backend"]): p["images_per_s"] for p in points}
    for arch, batch in keys:
        row = [arch, batch, *(rate.get((arch, batch, b)) for b in backends)]
        if ratio:
            row.append(rate[(arch, batch, "onnx")] / rate[(arch, batch, "eager")])
        table.rows.append(row)
    return [table]


def run(args: argparse.Namespace) -> int:
    from miscause.device import pick_device
    from miscause.jobs.training import zoo

    archs = parse_list(args.archs, list(zoo.REGISTRY), "architecture")
    backends = parse_list(args.backends, BACKENDS, "backend")
    batch_sizes = parse_sizes(args.batch_sizes)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    device = pick_device(args.device)
    settings = {"archs": archs, "batch_sizes": batch_sizes, "backends": backends, "seconds": args.seconds,
                "min_calls": args.min_calls, "threads": threads, "precision": "fp32"}
    record = Run("model", settings, device=str(device))
    points, costs = [], {}
    for arch in archs:
        arch_points, costs[arch] = measure_arch(arch, batch_sizes, backends, device, threads, args)
        points += arch_points
    notes = ["randomly initialised zoo networks without test-time augmentation; "
             "onnx feeds host arrays (the CPU service's path)"]
    record.finish(tables(points, backends), {"points": points, "one_off_costs_s": costs}, notes,
                  None if args.no_write else args.out)
    return 0
