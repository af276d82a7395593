"""The `miscause` console script: one subcommand per job, each module imported only when chosen.

`add_subcommands` and `run_subcommand` are the one mechanism for lazily loaded subcommands: the top level
uses them, so do `miscause bench PART` and the study, which runs the jobs exactly as their command lines would.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from miscause import __version__
from miscause.errors import MiscauseError

# name -> (module holding `add_arguments(parser)` and `run(args) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("miscause.jobs.training.train", "train an architecture on CIFAR-10 or an image folder"),
    "evaluate": ("miscause.jobs.training.evaluate", "evaluate a checkpoint and write its predictions file"),
    "export": ("miscause.jobs.training.export", "export a checkpoint to ONNX and a torch.export program"),
    "analyze": ("miscause.jobs.analysis.analyze", "misclassification analysis, erasure study and report"),
    "study": ("miscause.jobs.study", "the whole study: train, evaluate, export and analyze six models"),
    "serve": ("miscause.server.main", "serve a model repository over gRPC (Open Inference Protocol)"),
    "client": ("miscause.client.cli", "send images to a running server"),
    "bench": ("miscause.benchmarks.cli", "benchmarks: service, models, training, kernels"),
}


class DeferredParser(argparse.ArgumentParser):
    """Stands in for a subcommand's parser: keeps every argument after the subcommand's name for its real
    parser, which `run_subcommand` builds once the subcommand is chosen."""

    def parse_known_args(self, args=None, namespace=None):
        namespace = namespace if namespace is not None else argparse.Namespace()
        namespace.options = list(args or [])
        return namespace, []


def add_subcommands(parser: argparse.ArgumentParser, commands: dict[str, tuple[str, str]], dest: str) -> None:
    """One deferred subparser per command; `args.<dest>` names the chosen one, `args.options` its arguments."""
    subparsers = parser.add_subparsers(dest=dest, metavar=dest.upper(), required=True, parser_class=DeferredParser)
    for name, (_, help_text) in commands.items():
        subparsers.add_parser(name, help=help_text, add_help=False)


def subcommand_parser(prog: str, module_name: str) -> tuple[argparse.ArgumentParser, ModuleType]:
    """A subcommand's own parser (its module imported only now, its docstring as the description)."""
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=prog, description=(module.__doc__ or "").strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    return parser, module


def run_subcommand(prog: str, module_name: str, argv: list) -> int:
    """Parse `argv` with the subcommand's parser and run it; its exit status."""
    parser, module = subcommand_parser(prog, module_name)
    return int(module.run(parser.parse_args([str(a) for a in argv])) or 0)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser."""
    parser = argparse.ArgumentParser(
        prog="miscause",
        description="Find, explain and correct image misclassifications, and serve the correction.",
    )
    parser.add_argument("--version", action="version", version=f"miscause {__version__}")
    add_subcommands(parser, COMMANDS, "command")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, run the subcommand, and turn user errors into one line and exit status 2."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run_subcommand(f"miscause {args.command}", COMMANDS[args.command][0], args.options)
    except MiscauseError as error:
        message = " ".join(str(error).split())  # one line, however the cause was worded
        print(f"miscause {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"miscause {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
