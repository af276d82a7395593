"""Benchmarks: the service against its in-process limit, the models, training, the kernels.

Each part prints its table last and writes JSON and markdown (machine, versions, commit, settings, command,
date, load average) to benchmarks/results/<part>-<device>.{json,md}. `miscause bench PART --help` lists a
part's options.

parts:
  serve    closed-loop gRPC load over loopback, sweeping concurrency until throughput stops growing, for
           three output sets (LABEL; LABEL+SALIENCY; CORRECTED_LABEL+ERASED_LABEL), each beside the in-process
           throughput of the same computation; p50/p90/p99 latency, half-load latency, generator CPU use
  model    forward throughput per architecture and batch size: ONNX Runtime, torch eager, torch.compile,
           and the gradient (saliency) path
  train    training images/s and time-to-accuracy from a run's metrics.jsonl, and optionally a short
           measured training per architecture
  kernels  the saliency and erasure kernels' benchmark

examples:
  miscause bench serve                                  # starts a server on the default model, loopback
  miscause bench serve --outputs LABEL --batch 1 --duration 5
  miscause bench serve --server 127.0.0.1:8001 --model cifarnet   # a server already running
  miscause bench model --archs cifarnet,resnet50 --batch-sizes 1,64
  miscause bench train --metrics runs/cifarnet/metrics.jsonl --steps 20 --archs cifarnet,mobilenet_v2
  miscause bench kernels
"""

from __future__ import annotations

import argparse
import importlib

# part -> (module with `add_arguments(parser)` and `run(args) -> int`, one-line help)
PARTS: dict[str, tuple[str, str]] = {
    "serve": ("miscause.benchmarks.serve", "service throughput and latency against the in-process limit"),
    "model": ("miscause.benchmarks.model", "forward and gradient throughput per architecture and batch size"),
    "train": ("miscause.benchmarks.train", "training images/s and time-to-accuracy"),
    "kernels": ("miscause.benchmarks.kernels", "saliency and erasure kernels"),
}


class DeferredParser(argparse.ArgumentParser):
    """Stands in for a part's parser: keeps every argument after the part's name for its real parser, which
    `run` builds once the part is chosen, so only that part's module is imported."""

    def parse_known_args(self, args=None, namespace=None):
        namespace = namespace if namespace is not None else argparse.Namespace()
        namespace.options = list(args or [])
        return namespace, []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parts = parser.add_subparsers(dest="part", metavar="PART", required=True, parser_class=DeferredParser)
    for name, (_, help_text) in PARTS.items():
        parts.add_parser(name, help=help_text, add_help=False)


def part_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    """The chosen part's own parser (its module imported only now) and its module."""
    module = importlib.import_module(PARTS[name][0])
    parser = argparse.ArgumentParser(prog=f"miscause bench {name}", description=(module.__doc__ or "").strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    return parser, module


def run(args: argparse.Namespace) -> int:
    parser, module = part_parser(args.part)
    return int(module.run(parser.parse_args(args.options)) or 0)
