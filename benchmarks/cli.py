"""Benchmarks: the service against its in-process limit, the models, training, the kernels.

Each part prints its table last and writes JSON and markdown (machine, versions, commit, settings, command,
date, load average) to benchmarks/results/<part>-<device>.{json,md}. `miscause bench PART --help` lists a
part's options.

parts:
  serve    closed-loop gRPC load over loopback, sweeping concurrency until throughput stops growing, for
           three output sets (LABEL; LABEL+SALIENCY; CORRECTED_LABEL+ERASED_LABEL), each beside the in-process
           throughput of the same computation; p50/p90/p99 latency, half-load latency, generator CPU use; with
           --overload, 4x the saturating concurrency with and without the queue timeout
  model    forward throughput per architecture and batch size: ONNX Runtime, torch eager, torch.compile,
           and the gradient (saliency) path
  train    training images/s and time-to-accuracy from a run's metrics.jsonl, and optionally a short
           measured training per architecture
  kernels  the saliency and erasure kernels' benchmark
  http-stacks  aiohttp against uvicorn+Starlette serving the REST inference route's decode and encode

examples:
  miscause bench serve                                  # starts a server on the default model, loopback
  miscause bench serve --outputs LABEL --batch 1 --duration 5
  miscause bench serve --server 127.0.0.1:8001 --model cifarnet   # a server already running
  miscause bench serve --overload --sets saliency --batch 64 --default-timeout-us 2000000
  miscause bench model --archs cifarnet,resnet50 --batch-sizes 1,64
  miscause bench train --metrics runs/cifarnet/metrics.jsonl --steps 20 --archs cifarnet,mobilenet_v2
  miscause bench kernels
"""

from __future__ import annotations

import argparse

from miscause.cli import add_subcommands, run_subcommand

# part -> (module with `add_arguments(parser)` and `run(args) -> int`, one-line help)
PARTS: dict[str, tuple[str, str]] = {
    "serve": ("miscause.benchmarks.serve", "service throughput and latency against the in-process limit"),
    "model": ("miscause.benchmarks.model", "forward and gradient throughput per architecture and batch size"),
    "train": ("miscause.benchmarks.train", "training images/s and time-to-accuracy"),
    "kernels": ("miscause.benchmarks.kernels", "saliency and erasure kernels"),
    "http-stacks": ("miscause.benchmarks.http_stacks", "HTTP stacks for the REST front end, on binary requests"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_subcommands(parser, PARTS, "part")


def run(args: argparse.Namespace) -> int:
    return run_subcommand(f"miscause bench {args.part}", PARTS[args.part][0], args.options)
