"""Misclassification analysis: confusion patterns, misclassification networks, cause assignment per class
pair, and (with --erasure) the erasure study and the service's correction policy; one report directory.

From predictions files (fast, CPU), each written by `miscause evaluate` on the same split:
  miscause analyze --predictions runs/cifarnet.npz runs/resnet50.npz --out reports/patterns
With seed replicates, which the dependence and equivalence tests need (repeat --replicates per architecture, at
least two architectures with two or more seeds):
  miscause analyze --predictions runs/*.npz --out reports/patterns \\
      --replicates cifarnet=cifarnet_s0,cifarnet_s1 --replicates resnet50=resnet50_s0,resnet50_s1

From a model repository and a dataset (inference, saliency and erasure; GPU when present):
  miscause analyze --repository models --models cifarnet resnet50 --data ../shared/data/cifar10 \\
      --erasure --out reports/study

From study result files (`miscause study --stage-only`; no model or images needed, the erasure study included):
  miscause analyze --results docs/study/results/*.npz --out reports/study

The output directory (report.md, report.html, metrics.json, figures/, networks/) is written completely or not
at all; with --erasure each model's policy.json is written into its repository folder. See docs/analysis.md.
"""

from __future__ import annotations

import argparse
import shlex
from datetime import UTC, datetime
from pathlib import Path

from miscause.defaults import RANDOMISATION_IMAGES
from miscause.errors import MiscauseError
from miscause.jobs.analysis.erasure.fills import parse_fill
from miscause.jobs.analysis.erasure.run import ErasureOptions
from miscause.jobs.analysis.erasure.summaries import CONTROLS, PRIMARY_CONTROL
from miscause.jobs.analysis.inputs.data_record import data_record
from miscause.jobs.analysis.inputs.predictions import load_predictions
from miscause.jobs.analysis.options import RUN_TIME, add_erasure_arguments, erasure_options
from miscause.jobs.analysis.patterns.misclassification import AnalysisOptions, analyze_predictions
from miscause.jobs.analysis.patterns.model_dependence import DEFAULT_MARGIN
from miscause.jobs.analysis.patterns.replicates import check_replicates, parse_replicates
from miscause.jobs.analysis.patterns.significance import CORRECTIONS
from miscause.jobs.analysis.pipeline import (
    Context,
    RepositoryRequest,
    Results,
    Study,
    analyze_repository,
    analyze_runs,
)
from miscause.jobs.analysis.report.write import check_out, write_report
from miscause.jobs.analysis.versions import versions

REPEATED = ("replicates",)  # options given once per value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `analyze` subcommand's options."""
    source = parser.add_argument_group("input (one of)")
    source.add_argument("--predictions", nargs="+", metavar="NPZ", help="predictions files, one per model")
    source.add_argument("--repository", metavar="DIR", help="model repository (DIR/NAME/config.json, 1/model.pt2)")
    source.add_argument("--results", nargs="+", metavar="NPZ",
                        help="study result files, one per architecture (the erasure study included)")
    parser.add_argument("--models", nargs="+", metavar="NAME", help="models of the repository (default: all)")
    parser.add_argument("--data", metavar="PATH", help="dataset root (default: $MISCAUSE_DATA)")
    parser.add_argument("--out", required=True, metavar="DIR", help="report directory (replaced whole)")
    stats = parser.add_argument_group("significance and cause assignment")
    stats.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    stats.add_argument("--correction", choices=CORRECTIONS, default="holm",
                       help="multiple-comparison correction over a model's class pairs (default holm)")
    stats.add_argument("--min-count", type=int, default=5, help="errors an edge needs to count (default 5)")
    stats.add_argument("--tolerance", type=int, default=1,
                       help="models a shared edge may miss; the quorum is max(M - tolerance, M//2 + 1) "
                            "(default 1)")
    stats.add_argument("--replicates", action="append", metavar="NAME=M1,M2[,...]",
                       help="models of one architecture that differ only in seed (repeatable, at least two groups); "
                            "a confusion is model-dependent only where the share of errors it takes varies across "
                            "architectures more than across seeds; without groups dependence is not tested")
    stats.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                       help="equivalence margin on P(j | i, error): a pair is shared when every two architectures' "
                            f"shares are shown to differ by less (default {DEFAULT_MARGIN})")
    sanity = parser.add_argument_group("saliency sanity check (with --repository; result files carry their own)")
    sanity.add_argument("--randomisation-images", type=int, metavar="N",
                        help="test images of the model-randomisation check (Adebayo et al. 2018), drawn with the "
                             "seed: every saliency method of every model, trained against seeded random weights; "
                             f"0: no check (default {RANDOMISATION_IMAGES})")
    erasure_group = parser.add_argument_group("erasure study (with --repository; with --results only the control, "
                                              "policy gain and seed apply)")
    erasure_group.add_argument("--erasure", action="store_true", help="run the erasure study and fit the policy")
    erasure_group.add_argument("--control", choices=CONTROLS, default=PRIMARY_CONTROL,
                               help="the control erasure a pair must beat to be verified (default %(default)s, the "
                                    "primary endpoint's: another image's saliency mask of the same predicted class; "
                                    "shifted: the saliency mask at an offset that avoids it; random: as many "
                                    "random anchors)")
    erasure_group.add_argument("--max-images", type=int, help="analyse a random subset of this many images per split")
    erasure_group.add_argument("--examples", type=int, default=8, help="example images per model in the report")
    erasure_group.add_argument("--policy-min-gain", type=int, default=3,
                               help="net images a policy rule must gain on the images it is fitted on, in every "
                                    "fit of the nested selection (default 3)")
    erasure_group.add_argument("--no-policy", action="store_true", help="do not write policy.json into the repository")
    erasure_group.add_argument("--batch-size", type=int, default=256, help="images per batch (default 256)")
    erasure_group.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    erasure_group.add_argument("--seed", type=int, default=0,
                               help="random anchors, subsets, bootstraps and the dependence power simulation")
    erasure_group.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_erasure_arguments(parser, "erasure settings (with --results only --top-percent, --box and "
                                  "--saliency-method apply: the files hold finished runs)")


def check_arguments(args: argparse.Namespace) -> None:
    """Combinations the parser cannot check."""
    if sum(map(bool, (args.predictions, args.repository, args.results))) != 1:
        raise MiscauseError("give exactly one of --predictions, --repository or --results")
    if args.predictions and (args.erasure or args.models):
        raise MiscauseError("--erasure and --models need --repository (predictions files hold no images)")
    computed = {"--models": args.models, "--data": args.data, "--max-images": args.max_images, "--fill": args.fill,
                **{"--" + key.replace("_", "-"): getattr(args, key) for key in RUN_TIME},
                "--randomisation-images": args.randomisation_images}
    given = [flag for flag, value in computed.items() if value is not None]
    if args.results and given:
        raise MiscauseError(f"{', '.join(given)}: result files hold finished runs; these options apply when the "
                            "study stage runs (miscause study --stage-only)")
    if args.fill is not None:
        parse_fill(args.fill)
    if args.max_images is not None and args.max_images < 1:
        raise MiscauseError(f"--max-images must be at least 1, got {args.max_images}")
    if args.randomisation_images is not None and args.randomisation_images < 0:
        raise MiscauseError(f"--randomisation-images must be at least 0, got {args.randomisation_images}")
    if args.examples < 0:
        raise MiscauseError(f"--examples must be at least 0, got {args.examples}")
    check_out(args.out)


def command_line(args: argparse.Namespace) -> str:
    """The command with every option spelt out, defaults included, so the report says how to rerun it."""
    words = ["miscause", "analyze"]
    for key, value in vars(args).items():
        if value is None or value is False:
            continue
        if key in REPEATED:
            words += [word for item in value for word in ("--" + key.replace("_", "-"), item)]
            continue
        words.append("--" + key.replace("_", "-"))
        if value is not True:
            words += [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    """Analyse, write the report directory, then (with --erasure) the policies."""
    check_arguments(args)
    options = AnalysisOptions(alpha=args.alpha, correction=args.correction, min_count=args.min_count,
                              tolerance=args.tolerance, replicates=tuple(parse_replicates(args.replicates).items()),
                              margin=args.margin, seed=args.seed)
    options.check()
    context = Context(created=datetime.now(UTC).isoformat(timespec="seconds"), command=command_line(args),
                      versions=versions())
    if args.results:
        return run_results(args, options, context)
    if args.repository:
        return run_repository(args, options, context)
    analysis = analyze_predictions([load_predictions(p) for p in args.predictions], options)
    data = data_record(f"Predictions files of {len(analysis.models)} model(s)",
                       next(iter(analysis.models.values())).n, predictions=list(args.predictions))
    write_report(args.out, Results(analysis=analysis, context=context, data=data))
    print(f"wrote {args.out}")
    return 0


def study(args: argparse.Namespace, erasure: ErasureOptions) -> Study:
    """How the erasure study's runs are judged, from the options."""
    return Study(erasure=erasure, control=args.control, policy_min_gain=args.policy_min_gain, seed=args.seed)


def run_results(args: argparse.Namespace, options: AnalysisOptions, context: Context) -> int:
    """The result-file path: the runs come from the files, the default setting and method from the options."""
    from miscause.jobs.analysis.inputs.results import combine_results, load_results
    loaded = [load_results(path) for path in args.results]
    erasure, data = combine_results(loaded, args.top_percent, args.box, args.saliency_method)
    results = analyze_runs([runs for _, runs in loaded], study(args, erasure), options, context, data)
    results.warnings += [f"{runs.name}: its result file (format version {meta['format_version']}) does not carry "
                         "the model-randomisation check as now run (cascading, layer by layer), so the report has "
                         "no saliency sanity check for it"
                         for meta, runs in loaded if runs.randomisation is None]
    write_report(args.out, results)
    print(f"wrote {args.out}")
    return 0


def run_repository(args: argparse.Namespace, options: AnalysisOptions, context: Context) -> int:
    """The model-repository path: the models run here, and their policies are written beside them."""
    from miscause.device import pick_device
    from miscause.jobs.analysis.inputs.repository_model import model_names
    from miscause.policy import write_policy
    from miscause.repository import POLICY

    names = tuple(args.models or model_names(args.repository))
    check_replicates(options.groups, {name: () for name in names})
    request = RepositoryRequest(
        repository=args.repository, models=names, data=args.data, max_images=args.max_images,
        study=study(args, erasure_options(args, batch_size=args.batch_size, seed=args.seed)) if args.erasure else None,
        examples=args.examples, seed=args.seed, batch_size=args.batch_size, progress=not args.no_progress,
        randomisation_images=RANDOMISATION_IMAGES if args.randomisation_images is None else args.randomisation_images)
    results = analyze_repository(request, options, pick_device(args.device), context)
    policy_paths = {} if args.no_policy else {name: Path(args.repository) / name / POLICY
                                              for name in results.policies}
    results.policy_paths = {name: str(path) for name, path in policy_paths.items()}
    write_report(args.out, results)
    for name, path in policy_paths.items():
        write_policy(path, results.policies[name])
        print(f"wrote {path}")
    print(f"wrote {args.out}")
    return 0
