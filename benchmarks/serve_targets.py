"""`miscause bench serve --targets`: the service's three throughput targets, each against its in-process
reference measured in the same run, on the same model file.

1. LABEL, 64-image requests from 8 callers: >= 0.95 of in-process ONNX Runtime (normalise, `session.run`) at
   batch 64;
2. LABEL, one-image requests, at every concurrency from 8 to 128 callers: >= 0.85 of that same rate;
3. the full correction (CORRECTED_LABEL + ERASED_LABEL), 32-image requests from 8 callers: >= 1.5x a
   straightforward torch implementation of the same outputs (eager forward, full backward, erase, eager
   forward) and >= 0.9 of the service's own in-process limit (`ServedModel.execute` on 32-image requests).

The in-process references take the best of several runs (`serve.best_rate`), ONNX Runtime and plain torch
with every core whatever the server's `--threads`; the service side is a closed loop as in `bench serve`.
Ratios mean something only within one run; absolute rates only with the device named.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import numpy as np
import torch

from miscause.benchmarks.report import Run, Table, device_tag
from miscause.benchmarks.serve import Point, best_rate, closed_loop, in_process, print_point
from miscause.benchmarks.server_process import ServerProcess

LABEL_BATCH, LABEL_CALLERS, LABEL_TARGET = 64, 8, 0.95
ONNX_BATCHES = (1, 2, 4, 8, 16, 32, LABEL_BATCH)  # in-process ONNX Runtime measured at each
SINGLE_CALLERS, SINGLE_TARGET = (8, 16, 32, 64, 128), 0.85
CORRECTION_BATCH, CORRECTION_CALLERS = 32, 8
TORCH_TARGET, SELF_TARGET = 1.5, 0.9
CORRECTION = ("CORRECTED_LABEL", "ERASED_LABEL")


def onnx_rate(model, model_dir: Path, pixels: np.ndarray, seconds: float) -> float:
    """Plain in-process ONNX Runtime on the served file, with every core: normalise the uint8 batch,
    `session.run`."""
    from miscause import repository

    session = repository.onnx_session(model_dir / repository.VERSION / repository.ONNX_FILE)
    mean = np.asarray(model.config.mean, np.float32)[None, :, None, None]
    std = np.asarray(model.config.std, np.float32)[None, :, None, None]

    def call() -> np.ndarray:
        x = (pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - mean) / std
        return session.run([repository.OUTPUT_NAME], {repository.INPUT_NAME: x})[0]

    return best_rate(call, len(pixels), seconds)


def torch_correction_rate(model, model_dir: Path, pixels: np.ndarray, seconds: float) -> float:
    """The correction written plainly in torch with every core: eager forward, full backward (parameters
    included), the gradient map, erasure with the model's defaults, eager forward of the erased images, the
    policy's choice."""
    from miscause import kernels, repository
    from miscause.pixels import normalize

    network = repository.load_program(model_dir, "cpu")
    mean, std = torch.tensor(model.config.mean), torch.tensor(model.config.std)
    defaults = model.explain_defaults

    def call() -> torch.Tensor:
        x = normalize(torch.from_numpy(pixels), mean, std).requires_grad_(True)
        logits = network(x)
        probs = torch.softmax(logits, 1)
        confidence, labels = probs.max(1)
        logits.gather(1, labels[:, None]).sum().backward()
        saliency = x.grad.abs().amax(1)
        erased, _ = kernels.erase(x.detach(), saliency, defaults.top_percent, defaults.box)
        with torch.no_grad():
            erased_labels = network(erased).argmax(1)
        network.zero_grad(set_to_none=True)
        if model.policy is None:
            return erased_labels
        return torch.where(model.policy.applies(labels, confidence), erased_labels, labels)

    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        return best_rate(call, len(pixels), seconds)
    finally:
        torch.set_num_threads(threads)


def service_point(target: str, model_name: str, outputs: tuple[str, ...], pixels: np.ndarray, callers: int,
                  args: argparse.Namespace, server: ServerProcess) -> Point:
    """The service's images/s with `callers` closed-loop callers sending `pixels` for `outputs`."""
    from miscause.client.api import infer_request

    point = Point("+".join(outputs), callers, None, args.duration, len(pixels))
    payload = infer_request(model_name, pixels, outputs).SerializeToString()
    asyncio.run(closed_loop(target, payload, outputs, point, callers, args.warmup, args.mode, args.timeout,
                            args.channels, server.pid, server.metrics_url))
    print_point(point)
    return point


def verdict(name: str, service: float, reference: float, what: str, target: float) -> list:
    ratio = service / reference
    return [name, service, what, reference, ratio, f">= {target:g} {'met' if ratio >= target else 'MISSED'}"]


def formed_row(point: Point, onnx_by_batch: dict[int, float]) -> list:
    """A one-image point against in-process ONNX Runtime at the smallest measured batch not below the mean
    batch the server formed (a reference no easier than the server's own batches)."""
    mean = point.server.get("mean_batch") or 1.0
    size = min((b for b in onnx_by_batch if b >= mean), default=max(onnx_by_batch))
    return [point.concurrency, point.images_per_s, mean, size, onnx_by_batch[size],
            point.images_per_s / onnx_by_batch[size]]


def run_targets(args: argparse.Namespace, engine, model_name: str, repo: Path, options: list[str]) -> int:
    """Measure the three targets (see the module docstring) and write `serve-targets-<device>`."""
    model = engine.models[model_name]
    rng = np.random.default_rng(2)
    pixels = {size: rng.integers(0, 256, (size, model.height, model.width, 3), dtype=np.uint8)
              for size in (*ONNX_BATCHES, CORRECTION_BATCH)}
    seconds = args.in_process_seconds
    onnx_by_batch = {size: onnx_rate(model, repo / model_name, pixels[size], seconds) for size in ONNX_BATCHES}
    onnx = onnx_by_batch[LABEL_BATCH]
    engine_correction = in_process(engine, model_name, CORRECTION, CORRECTION_BATCH, seconds)[CORRECTION_BATCH]
    plain_torch = torch_correction_rate(model, repo / model_name, pixels[CORRECTION_BATCH], seconds)
    print(f"in-process: ONNX Runtime batch {LABEL_BATCH} {onnx:.1f}, correction engine {engine_correction:.1f}, "
          f"plain torch {plain_torch:.1f} images/s", flush=True)
    with ServerProcess(repo, options) as server:
        label = service_point(server.target, model_name, ("LABEL",), pixels[LABEL_BATCH], LABEL_CALLERS, args,
                              server)
        singles = [service_point(server.target, model_name, ("LABEL",), pixels[1], callers, args, server)
                   for callers in SINGLE_CALLERS]
        correction = service_point(server.target, model_name, CORRECTION, pixels[CORRECTION_BATCH],
                                   CORRECTION_CALLERS, args, server)
        server.stop()
    rows = [verdict(f"LABEL, {LABEL_BATCH}-image requests, {LABEL_CALLERS} callers", label.images_per_s, onnx,
                    f"ONNX Runtime in-process, batch {LABEL_BATCH}", LABEL_TARGET)]
    rows += [verdict(f"LABEL, 1-image requests, {p.concurrency} callers", p.images_per_s, onnx,
                     f"ONNX Runtime in-process, batch {LABEL_BATCH}", SINGLE_TARGET) for p in singles]
    rows += [verdict(f"correction, {CORRECTION_BATCH}-image requests, {CORRECTION_CALLERS} callers",
                     correction.images_per_s, plain_torch, "plain torch in-process", TORCH_TARGET),
             verdict(f"correction, {CORRECTION_BATCH}-image requests, {CORRECTION_CALLERS} callers",
                     correction.images_per_s, engine_correction, "the service's engine in-process", SELF_TARGET)]
    table = Table("Service against its in-process references (images/s)",
                  ["scenario", "service", "reference", "reference img/s", "ratio", "target"], rows)
    points = [label, *singles, correction]
    latency = Table("Latency of the measured points (ms)", ["outputs", "images per request", "callers", "p50",
                                                             "p99", "mean batch"],
                    [[p.output_set, p.images_per_request, p.concurrency, p.summary()["p50_ms"],
                      p.summary()["p99_ms"], p.server.get("mean_batch")] for p in points])
    formed = Table("One-image LABEL requests against in-process ONNX Runtime at the batch the server formed "
                   "(the smallest measured batch at least as large)",
                   ["callers", "service img/s", "mean batch", "in-process batch", "in-process img/s", "ratio"],
                   [formed_row(p, onnx_by_batch) for p in singles])
    missed = [f"{row[0]} against {row[2]}: {row[4]:.2f}, under the target {row[5].split()[1]}" for row in rows
              if row[5].endswith("MISSED")]
    record = Run("serve", {"model": model_name, "repository": str(repo), "server_options": options,
                           "warmup_s": args.warmup, "duration_s": args.duration, "in_process_seconds": seconds,
                           "mode": args.mode}, device=str(model.backend.device))
    data = {"references": {"onnx_by_batch": onnx_by_batch, "engine_correction_batch32": engine_correction,
                           "torch_correction_batch32": plain_torch},
            "points": [p.summary() for p in points],
            "verdicts": [dict(zip(table.columns, row, strict=True)) for row in rows]}
    name = args.name or f"serve-targets-{device_tag(str(model.backend.device))}"
    record.finish([table, formed, latency], data, missed, None if args.no_write else args.out, name=name)
    return 0
