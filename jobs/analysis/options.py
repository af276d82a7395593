"""The erasure study's command-line options, shared by `miscause analyze` and `miscause study`: one function adds
them to a parser, one reads them back into `ErasureOptions`, one spells the given ones for another command.

The setting itself (p, b, method) defaults to the study's (`miscause.defaults`); every other option defaults to
None, meaning "as `ErasureOptions` sets it", so a command can tell what was given (result files hold finished
runs and refuse options that apply only while the runs are made).
"""

from __future__ import annotations

import argparse

from miscause.defaults import BOX, SALIENCY_METHOD, TOP_PERCENT
from miscause.jobs.analysis.erasure.fills import FILLS, parse_fill
from miscause.jobs.analysis.erasure.run import ErasureOptions

DEFAULTS = ErasureOptions()
# the options that shape the runs, by field name; each is None unless given
RUN_TIME = ("sweep_top_percent", "sweep_box", "sweep_fill", "sweep_methods", "control_draws", "curve_methods",
            "curve_steps", "curve_images", "insertion_canvas")


def _words(values: tuple) -> str:
    return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def add_erasure_arguments(parser: argparse.ArgumentParser, title: str = "erasure study") -> None:
    """The erasure study's options, in one group of `parser`."""
    group = parser.add_argument_group(title)
    group.add_argument("--top-percent", type=float, default=TOP_PERCENT,
                       help="default anchor share p (default %(default)g)")
    group.add_argument("--box", type=int, default=BOX, help="default box size b, odd (default %(default)s)")
    group.add_argument("--saliency-method", default=SALIENCY_METHOD,
                       help="one of miscause.kernels.METHODS, of the predicted class (default %(default)s)")
    group.add_argument("--fill", nargs="+", metavar="FILL",
                       help=f"what erased pixels become: one of {', '.join(FILLS)}, or three values in normalised "
                            "units (default mean: the dataset mean, 0)")
    group.add_argument("--sweep-top-percent", type=float, nargs="+", metavar="P",
                       help=f"p values of the sweep (default {_words(DEFAULTS.sweep_top_percent)})")
    group.add_argument("--sweep-box", type=int, nargs="+", metavar="B",
                       help=f"b values of the sweep (default {_words(DEFAULTS.sweep_box)})")
    group.add_argument("--sweep-fill", nargs="+", choices=FILLS, metavar="FILL",
                       help=f"fills compared at the default setting (default all: {_words(DEFAULTS.sweep_fill)})")
    group.add_argument("--sweep-methods", nargs="+", metavar="METHOD",
                       help="saliency methods of the sweep beside --saliency-method, each against the "
                            "location-matched control (default: gradient integrated_gradients grad_cam; grad_cam "
                            "where the model names a layer); name one to limit the work on a CPU")
    group.add_argument("--control-draws", type=int, metavar="D",
                       help=f"draws per image of the location-matched and shifted controls at the default setting "
                            f"(default {DEFAULTS.control_draws}; the primary endpoint asks for at least 10)")
    group.add_argument("--curve-methods", nargs="+", metavar="METHOD",
                       help="saliency methods of the deletion and insertion curves (default: all but grad_cam, "
                            "which needs a layer in every model)")
    group.add_argument("--curve-steps", type=int, metavar="T",
                       help=f"steps of each curve (default {DEFAULTS.curve_steps})")
    group.add_argument("--curve-images", type=int, metavar="N",
                       help=f"test images the curves use, drawn with the seed; 0: no curves (default "
                            f"{DEFAULTS.curve_images})")
    group.add_argument("--insertion-canvas", choices=FILLS,
                       help=f"what the insertion curves start from (default {DEFAULTS.insertion_canvas})")


def given_run_time(args: argparse.Namespace) -> dict:
    """The options that shape the runs which were given, by field name (tuples for lists)."""
    return {key: tuple(value) if isinstance(value, list) else value
            for key in RUN_TIME if (value := getattr(args, key)) is not None}


def erasure_options(args: argparse.Namespace, **fixed: int) -> ErasureOptions:
    """The options as given, `ErasureOptions`' defaults for the rest; `fixed`: the command's batch size and seed."""
    return ErasureOptions(top_percent=args.top_percent, box=args.box, saliency_method=args.saliency_method,
                          fill=parse_fill(args.fill) if args.fill else None, **given_run_time(args), **fixed)


def erasure_words(args: argparse.Namespace) -> list:
    """The given options spelt as a command line takes them, to pass them on to `miscause analyze`."""
    words: list = ["--top-percent", args.top_percent, "--box", args.box, "--saliency-method", args.saliency_method]
    words += ["--fill", *args.fill] if args.fill else []
    for key, value in given_run_time(args).items():
        words += ["--" + key.replace("_", "-"), *(value if isinstance(value, tuple) else (value,))]
    return words
