"""The whole study in one resumable command: train, evaluate and export each architecture, then analyze all.

Stages run in order and each finished stage is recorded in OUT/study.json, so the command can be stopped at
any point (or bounded with --max-stages / --budget-minutes, e.g. one device lease at a time) and run again
with the same arguments to continue; an interrupted training stage resumes from its last epoch.

Layout of OUT: runs/ARCH/ (checkpoints, metrics), predictions/ARCH-{val,test}.npz, repository/ARCH/ (served
models), report/ (the analysis report), study.json (stage records), summary.md (the final table).

--stage-only: one self-contained stage per architecture and seed (train, then the erasure study's validation
and test runs from the trained model) writing RESULTS/ARCH_sSEED.npz (RESULTS: OUT/results unless --results),
a few MB and no weights, for a device whose files cannot be kept; `miscause analyze --results` makes the report
from those files alone. A stage whose result file exists is not run again. With --budget-minutes each stage
trains the epochs (of its recipe's) that fit its share of the remaining budget, planned from a measured step
time. --dry-run measures and prints that plan, per stage, and runs nothing. --design NAME (study_designs.py)
names a study fixed in advance: its architectures, seeds, schedules, full-sweep seeds and result folder.

examples:
  miscause study --data ../shared/data/cifar10 --out study
  miscause study --data ../shared/data/cifar10 --out study --max-stages 1      # one stage, then stop
  miscause study --data tiny --out toy --archs cifarnet mobilenet_v2 --epochs 1 --batch-size 32 --limit 256
  miscause study --stage-only --archs resnet50 --data ../shared/data/cifar10 --out study --budget-minutes 5
  miscause study --dry-run --stage-only --archs resnet50 googlenet --budget-minutes 5
  miscause study --design cpu --stage-only --device cpu --data ../shared/data/cifar10 --out runs/study-cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from miscause import __version__
from miscause.atomic import atomic_path
from miscause.defaults import RANDOMISATION_IMAGES
from miscause.device import describe, pick_device
from miscause.errors import MiscauseError
from miscause.jobs.analysis.erasure.run import ErasureOptions
from miscause.jobs.analysis.options import add_erasure_arguments, erasure_options, erasure_words
from miscause.jobs.study_designs import DESIGNS
from miscause.jobs.study_plan import StagePlan, fit_epochs, plan_stage, plan_table, split_sizes
from miscause.jobs.study_stage import StageRequest, invoke, model_name, result_path, run_stage, train_job
from miscause.jobs.training import zoo
from miscause.jobs.training.train import recipe_for

# a stage: its name and what runs it, given its share of the remaining budget in seconds (None: no budget)
Stage = tuple[str, Callable[[float | None], None]]


def invoke_all(steps: list[tuple[str, list]], share: float | None) -> None:
    """A stage of the whole study: its jobs in order, as their command lines would run them."""
    for command, argv in steps:
        invoke(command, argv)


def whole_study(args: argparse.Namespace) -> list[Stage]:
    """Per architecture train, evaluate, export; then analyze (from the repository, with the erasure study)."""
    out, data = args.out, str(args.data)
    stages = []
    for arch in args.archs:
        run_dir = out / "runs" / arch
        steps = {
            "train": [train_job(arch, data, run_dir, args.seeds[0], args.device, args.epochs, args.batch_size,
                                args.limit, not args.no_progress)],
            "evaluate": [("evaluate", ["--checkpoint", run_dir / "checkpoint.pt", "--data", data, "--split", split,
                                       "--out", out / "predictions" / f"{arch}-{split}.npz", "--name", arch,
                                       "--device", args.device, "--no-progress"]) for split in ("val", "test")],
            "export": [("export", ["--checkpoint", run_dir / "checkpoint.pt", "--repository", out / "repository",
                                   "--name", arch, "--data", data])]}
        stages += [(f"{name}:{arch}", partial(invoke_all, jobs)) for name, jobs in steps.items()]
    if args.no_erasure:
        source = ["--predictions", *(out / "predictions" / f"{arch}-test.npz" for arch in args.archs)]
    else:
        source = ["--repository", out / "repository", "--models", *args.archs, "--data", data, "--erasure",
                  "--device", args.device, *erasure_words(args),
                  *(["--max-images", args.limit] if args.limit else []),
                  "--randomisation-images", args.randomisation_images]
    stages.append(("analyze", partial(invoke_all, [("analyze", [*source, "--out", out / "report"])])))
    return stages


def schedule(args: argparse.Namespace, arch: str) -> dict:
    """The recipe fields a stage of `arch` sets: --epochs (else its design's epochs, if any) and --batch-size."""
    epochs = args.epochs or (DESIGNS[args.design].epochs.get(arch) if args.design else None)
    return {"epochs": epochs, "batch_size": args.batch_size}


def stage_erasure(args: argparse.Namespace, seed: int) -> ErasureOptions:
    """The erasure study of the stage trained with `seed`: for a full-sweep seed as given (the design's sweep where
    an option was not given, `resolve_defaults`); for the others the default setting and the study's method alone,
    with its controls and the randomisation check, but no further method, no fill sweep and no curves."""
    options = erasure_options(args, seed=seed)
    if seed in args.sweep_seeds:
        return options
    return replace(options, sweep_top_percent=(options.top_percent,), sweep_box=(options.box,), sweep_fill=(),
                   sweep_methods=(options.saliency_method,), curve_images=0)


def plan_for(args: argparse.Namespace, arch: str, seed: int, budget_seconds: float | None,
             step_seconds: float | None = None) -> StagePlan:
    """One stage's plan: measured on the chosen device (but for a step time given), epochs fitted to the budget
    if any."""
    recipe = recipe_for(arch, schedule(args, arch))
    return plan_stage(arch, recipe, split_sizes(args.data and str(args.data), args.limit), stage_erasure(args, seed),
                      pick_device(args.device), budget_seconds, step_seconds)


def device_stage(args: argparse.Namespace, state: dict, arch: str, seed: int, share: float | None) -> None:
    """The self-contained stage of one architecture and seed, unless its result file exists; its plan is made
    once and kept in study.json, so a restarted stage resumes its training with the same epochs."""
    name = model_name(arch, seed)
    if result_path(args.results, name).exists():
        print(f"{name}: {result_path(args.results, name)} exists, the stage is not run again")
        return
    if name not in state["plans"]:
        state["plans"][name] = plan_for(args, arch, seed, share).record()
        write_state(args.out / "study.json", state)
    plan = state["plans"][name]
    run_stage(StageRequest(arch=arch, seed=seed, data=str(args.data), out=args.out, results=args.results,
                           epochs=plan["epochs"], batch_size=plan["batch_size"], limit=args.limit,
                           erasure=stage_erasure(args, seed), examples=args.examples, device=args.device,
                           progress=not args.no_progress, plan=plan, randomisation_images=args.randomisation_images))


def stage_models(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(architecture, seed) of every stage, seed by seed, so that a study stopped early holds every architecture
    at its first seeds."""
    return [(arch, seed) for seed in args.seeds for arch in args.archs]


def stage_only(args: argparse.Namespace, state: dict) -> list[Stage]:
    """One self-contained stage per architecture and seed, each writing its result file."""
    return [(f"stage:{model_name(arch, seed)}", partial(device_stage, args, state, arch, seed))
            for arch, seed in stage_models(args)]


def read_state(path: Path) -> dict:
    """Stage records of earlier runs of this study (empty for a new one)."""
    if not path.exists():
        return {"stages": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise MiscauseError(f"{path} is damaged ({error}): remove it to restart the study") from None


def write_state(path: Path, state: dict) -> None:
    """Record the study's progress atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(state, indent=2) + "\n")


def test_accuracy(out: Path, results_dir: Path, name: str) -> float | None:
    """A model's test accuracy from its predictions file or, in a stage-only study, its result file."""
    import numpy as np

    preds_path, results = out / "predictions" / f"{name}-test.npz", result_path(results_dir, name)
    if preds_path.exists():
        with np.load(preds_path) as preds:
            return float((preds["logits"].argmax(1) == preds["labels"]).mean())
    if results.exists():
        with np.load(results) as stored:
            return json.loads(str(stored["meta"]))["accuracy"]["test"]
    return None


def summary_table(out: Path, results: Path, names: list[str], state: dict) -> str:
    """Markdown table: per model test accuracy, epochs, training time and throughput."""
    import numpy as np

    lines = ["| model | test accuracy | epochs | train time (s) | train images/s |", "|---|---|---|---|---|"]
    for name in names:
        accuracy = test_accuracy(out, results, name)
        row = [name, "-" if accuracy is None else f"{accuracy:.4f}"]
        log = out / "runs" / name / "metrics.jsonl"
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        row += [str(len(records)), f"{sum(r['seconds'] for r in records):.0f}" if records else "-",
                f"{np.median([r['images_per_s'] for r in records]):.0f}" if records else "-"]
        lines.append("| " + " | ".join(row) + " |")
    stage_lines = [f"| {name} | {record['seconds']:.1f} |" for name, record in state["stages"].items()]
    return "\n".join(lines + ["", "| stage | wall time (s) |", "|---|---|", *stage_lines]) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, help="CIFAR-10 batches or an image folder (a dry run without it "
                                                  "plans for CIFAR-10's sizes)")
    parser.add_argument("--out", type=Path, help="study folder (created; reused to resume)")
    parser.add_argument("--design", choices=list(DESIGNS),
                        help="a stage-only study fixed in advance (jobs/study_designs.py): its architectures, seeds, "
                             "epochs, full-sweep seeds and result folder are the defaults of those options")
    parser.add_argument("--archs", nargs="+", choices=list(zoo.REGISTRY), metavar="ARCH",
                        help=f"default: the design's, else the study's six ({' '.join(zoo.STUDY_ARCHS)})")
    parser.add_argument("--stage-only", action="store_true",
                        help="per architecture and seed one self-contained stage writing RESULTS/ARCH_sSEED.npz, "
                             "no weights")
    parser.add_argument("--results", type=Path,
                        help="with --stage-only, the result files' folder (default: the design's, else OUT/results)")
    parser.add_argument("--dry-run", action="store_true",
                        help="measure on this device and print each architecture's planned epochs and time")
    parser.add_argument("--epochs", type=int, help="override every recipe's epoch count")
    parser.add_argument("--batch-size", type=int, help="override every recipe's batch size")
    parser.add_argument("--limit", type=int, help="train on N images and analyze N images per split (toy runs)")
    parser.add_argument("--randomisation-images", type=int, default=RANDOMISATION_IMAGES, metavar="N",
                        help=f"test images of the model-randomisation check (default: analyze's, "
                             f"{RANDOMISATION_IMAGES}; 0: none)")
    parser.add_argument("--examples", type=int, default=8, help="report examples kept per result file (default 8)")
    parser.add_argument("--seed", dest="seeds", type=int, nargs="+", metavar="SEED",
                        help="training seeds, one stage per architecture and seed (--stage-only; the whole study "
                             "takes one); the erasure study draws with the stage's seed (default: the design's, "
                             "else 0)")
    parser.add_argument("--sweep-seeds", type=int, nargs="+", metavar="SEED",
                        help="with --stage-only, the seeds whose stages run the full sweep (settings, fills, "
                             "curves); the others run the default setting with its controls only (default: the "
                             "design's, else every seed)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    parser.add_argument("--max-stages", type=int, help="run at most this many stages, then stop")
    parser.add_argument("--budget-minutes", type=float,
                        help="start no new stage after this many minutes; with --stage-only each stage also "
                             "trains only the epochs that fit its share of what is left")
    parser.add_argument("--no-erasure", action="store_true", help="analyze predictions only")
    parser.add_argument("--no-progress", action="store_true")
    add_erasure_arguments(parser, "erasure settings (as `miscause analyze` takes them)")


def resolve_defaults(args: argparse.Namespace) -> None:
    """Fill the options left unset from the design, if one is named (its sweep among them), else from the study's
    own defaults (after `check_arguments`, which sees what was given)."""
    chosen = DESIGNS[args.design] if args.design else None
    args.archs = args.archs or list(chosen.archs if chosen else zoo.STUDY_ARCHS)
    args.seeds = args.seeds or list(chosen.seeds if chosen else (0,))
    args.sweep_seeds = args.sweep_seeds or list(chosen.sweep_seeds if chosen else args.seeds)
    if args.results is None:
        args.results = chosen.results if chosen else args.out and args.out / "results"
    for key, value in (chosen.sweep if chosen else {}).items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def check_arguments(args: argparse.Namespace) -> None:
    """Combinations the parser cannot check."""
    if not args.dry_run and (args.data is None or args.out is None):
        raise MiscauseError("--data and --out are needed (only a --dry-run goes without them)")
    if args.stage_only and args.no_erasure:
        raise MiscauseError("--stage-only always runs the erasure study: drop --no-erasure")
    if not args.stage_only and (args.design or args.results or args.sweep_seeds or len(args.seeds or ()) > 1):
        raise MiscauseError("--design, --results, several --seed values and --sweep-seeds need --stage-only")
    if args.budget_minutes is not None and args.budget_minutes <= 0:
        raise MiscauseError(f"--budget-minutes must be positive, got {args.budget_minutes}")
    if args.randomisation_images < 0:
        raise MiscauseError(f"--randomisation-images must be at least 0, got {args.randomisation_images}")
    erasure_options(args).check()


def dry_run(args: argparse.Namespace) -> int:
    """Measure each architecture on this device (its training step once, its erasure study once per kind of
    stage) and print every stage's plan; nothing is trained or written."""
    budget = args.budget_minutes * 60 if args.budget_minutes and args.stage_only else None
    models = stage_models(args) if args.stage_only else [(arch, args.seeds[0]) for arch in args.archs]
    measured: dict[tuple[str, ErasureOptions], StagePlan] = {}
    plans = []
    for number, (arch, seed) in enumerate(models):
        left = None if budget is None else max(0.0, budget - sum(p.total_seconds for p in plans))
        share = None if left is None else left / (len(models) - number)
        key = (arch, replace(stage_erasure(args, seed), seed=0))
        if key not in measured:
            step = next((p.step_seconds for (other, _), p in measured.items() if other == arch), None)
            measured[key] = plan_for(args, arch, seed, None, step)
        plan = replace(measured[key], model=model_name(arch, seed) if args.stage_only else arch)
        plans.append(plan if share is None else fit_epochs(plan, share))
    print(plan_table(plans, budget), end="")
    return 0


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    resolve_defaults(args)
    if args.dry_run:
        return dry_run(args)
    started = time.monotonic()
    state_path = args.out / "study.json"
    state = read_state(state_path)
    state.setdefault("plans", {})
    state.setdefault("command", " ".join(["miscause", *sys.argv[1:]]))
    state["versions"] = {"miscause": __version__, "torch": torch.__version__, "python": sys.version.split()[0]}
    state["device"] = describe(pick_device(args.device))
    stages = stage_only(args, state) if args.stage_only else whole_study(args)
    pending = [(name, step) for name, step in stages if name not in state["stages"]]
    ran = 0
    for number, (name, step) in enumerate(tqdm(pending, desc="study", disable=args.no_progress)):
        elapsed = time.monotonic() - started
        over_budget = args.budget_minutes and elapsed > args.budget_minutes * 60
        if (args.max_stages and ran >= args.max_stages) or over_budget:
            break
        stage_started = time.monotonic()
        step((args.budget_minutes * 60 - elapsed) / (len(pending) - number) if args.budget_minutes else None)
        state["stages"][name] = {"seconds": time.monotonic() - stage_started, "finished": time.time()}
        write_state(state_path, state)
        ran += 1
    names = [model_name(arch, seed) for arch, seed in stage_models(args)] if args.stage_only else args.archs
    table = summary_table(args.out, args.results, names, state)
    with atomic_path(args.out / "summary.md") as tmp:
        tmp.write_text(f"# Study summary\n\n`{state['command']}` on {state['device']}\n\n{table}")
    done = sum(name in state["stages"] for name, _ in stages)
    print(table + f"\n{done}/{len(stages)} stages done" + ("" if done == len(stages) else ": run again to continue"))
    return 0
