"""The `miscause` console script: one subcommand per job, each module imported only when chosen."""

from __future__ import annotations

import argparse
import importlib
import sys

from miscause import __version__
from miscause.errors import MiscauseError

# name -> (module holding `add_arguments(parser)` and `run(args) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("miscause.jobs.train", "train an architecture on CIFAR-10 or an image folder"),
    "evaluate": ("miscause.jobs.evaluate", "evaluate a checkpoint and write its predictions file"),
    "export": ("miscause.jobs.export", "export a checkpoint to ONNX and a torch.export program"),
    "analyze": ("miscause.jobs.analyze", "misclassification analysis, erasure study and report"),
    "study": ("miscause.jobs.study", "the whole study: train, evaluate, export and analyze six models"),
    "serve": ("miscause.server.main", "serve a model repository over gRPC (Open Inference Protocol)"),
    "client": ("miscause.client.cli", "send images to a running server"),
    "bench": ("miscause.benchmarks.cli", "benchmarks: service, models, training, kernels"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The top-level parser; only the chosen subcommand's module is imported."""
    parser = argparse.ArgumentParser(
        prog="miscause",
        description="Find, explain and correct image misclassifications, and serve the correction.",
    )
    parser.add_argument("--version", action="version", version=f"miscause {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(run=module.run)
            if module.__doc__:
                sub.description = module.__doc__.strip()
                sub.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, run the subcommand, and turn user errors into one line and exit status 2."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except MiscauseError as error:
        message = " ".join(str(error).split())  # one line, however the cause was worded
        print(f"miscause {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"miscause {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
