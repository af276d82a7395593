"""The whole study in one resumable command: train, evaluate and export each architecture, then analyze all.

Stages run in order and each finished stage is recorded in OUT/study.json, so the command can be stopped at
any point (or bounded with --max-stages / --budget-minutes, e.g. one device lease at a time) and run again
with the same arguments to continue; an interrupted training stage resumes from its last epoch.

Layout of OUT: runs/ARCH/ (checkpoints, metrics), predictions/ARCH-{val,test}.npz, repository/ARCH/ (served
models), report/ (the analysis report), study.json (stage records), summary.md (the final table).

examples:
  miscause study --data ../shared/data/cifar10 --out study
  miscause study --data ../shared/data/cifar10 --out study --max-stages 1      # one stage, then stop
  miscause study --data tiny --out toy --archs cifarnet mobilenet_v2 --epochs 1 --batch-size 32 --limit 256
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from miscause import __version__
from miscause.atomic import atomic_path
from miscause.cli import COMMANDS, run_subcommand
from miscause.errors import MiscauseError
from miscause.jobs.training import zoo


def invoke(command: str, argv: list) -> None:
    """Run a job exactly as its command line would, with the same parser and defaults."""
    status = run_subcommand(f"miscause {command}", COMMANDS[command][0], argv)
    if status:
        raise MiscauseError(f"miscause {command} exited with status {status}")


def plan(args: argparse.Namespace) -> list[tuple[str, list]]:
    """(stage name, [(command, argv), ...]) in order: per architecture train, evaluate, export; then analyze."""
    out, data = args.out, str(args.data)
    stages = []
    for arch in args.archs:
        run_dir = out / "runs" / arch
        options = ["--epochs", args.epochs] if args.epochs else []
        options += ["--limit", args.limit] if args.limit else []
        options += ["--batch-size", args.batch_size] if args.batch_size else []
        options += ["--no-progress"] if args.no_progress else []
        stages.append((f"train:{arch}", [("train", ["--arch", arch, "--data", data, "--split", "train",
                                                  "--out", run_dir, "--seed", args.seed, "--resume", *options])]))
        stages.append((f"evaluate:{arch}", [
            ("evaluate", ["--checkpoint", run_dir / "checkpoint.pt", "--data", data, "--split", split,
                        "--out", out / "predictions" / f"{arch}-{split}.npz", "--name", arch, "--no-progress"])
            for split in ("val", "test")]))
        stages.append((f"export:{arch}", [("export", ["--checkpoint", run_dir / "checkpoint.pt",
                                                    "--repository", out / "repository", "--name", arch,
                                                    "--data", data])]))
    if args.no_erasure:
        source = ["--predictions", *(out / "predictions" / f"{arch}-test.npz" for arch in args.archs)]
    else:
        source = ["--repository", out / "repository", "--models", *args.archs, "--data", data, "--erasure",
                  *(["--max-images", args.limit] if args.limit else [])]
    stages.append(("analyze", [("analyze", [*source, "--out", out / "report"])]))
    return stages


def read_state(path: Path) -> dict:
    """Stage records of earlier runs of this study (empty for a new one)."""
    if not path.exists():
        return {"stages": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise MiscauseError(f"{path} is damaged ({error}): remove it to restart the study") from None


def summary_table(out: Path, archs: list[str], state: dict) -> str:
    """Markdown table: per architecture test accuracy, epochs, training time and throughput."""
    import numpy as np

    lines = ["| model | test accuracy | epochs | train time (s) | train images/s |", "|---|---|---|---|---|"]
    for arch in archs:
        row, preds_path = [arch], out / "predictions" / f"{arch}-test.npz"
        if preds_path.exists():
            with np.load(preds_path) as preds:
                row.append(f"{(preds['logits'].argmax(1) == preds['labels']).mean():.4f}")
        else:
            row.append("-")
        log = out / "runs" / arch / "metrics.jsonl"
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        row += [str(len(records)), f"{sum(r['seconds'] for r in records):.0f}" if records else "-",
                f"{np.median([r['images_per_s'] for r in records]):.0f}" if records else "-"]
        lines.append("| " + " | ".join(row) + " |")
    stage_lines = [f"| {name} | {record['seconds']:.1f} |" for name, record in state["stages"].items()]
    return "\n".join(lines + ["", "| stage | wall time (s) |", "|---|---|", *stage_lines]) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="CIFAR-10 batches or an image folder")
    parser.add_argument("--out", required=True, type=Path, help="study folder (created; reused to resume)")
    parser.add_argument("--archs", nargs="+", default=list(zoo.STUDY_ARCHS), choices=list(zoo.REGISTRY),
                        metavar="ARCH", help=f"default: the study's six ({' '.join(zoo.STUDY_ARCHS)})")
    parser.add_argument("--epochs", type=int, help="override every recipe's epoch count")
    parser.add_argument("--batch-size", type=int, help="override every recipe's batch size")
    parser.add_argument("--limit", type=int, help="train on N images and analyze N test images (toy runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-stages", type=int, help="run at most this many stages, then stop")
    parser.add_argument("--budget-minutes", type=float, help="start no new stage after this many minutes")
    parser.add_argument("--no-erasure", action="store_true", help="analyze predictions only")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    state_path = args.out / "study.json"
    state = read_state(state_path)
    state.setdefault("command", " ".join(["miscause", *sys.argv[1:]]))
    state["versions"] = {"miscause": __version__, "torch": torch.__version__, "python": platform.python_version()}
    state["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    stages = plan(args)
    pending = [(name, steps) for name, steps in stages if name not in state["stages"]]
    ran = 0
    for name, steps in tqdm(pending, desc="study", disable=args.no_progress):
        over_budget = args.budget_minutes and time.monotonic() - started > args.budget_minutes * 60
        if (args.max_stages and ran >= args.max_stages) or over_budget:
            break
        stage_started = time.monotonic()
        for command, argv in steps:
            invoke(command, argv)
        state["stages"][name] = {"seconds": time.monotonic() - stage_started, "finished": time.time()}
        with atomic_path(state_path) as tmp:
            tmp.write_text(json.dumps(state, indent=2) + "\n")
        ran += 1
    table = summary_table(args.out, args.archs, state)
    with atomic_path(args.out / "summary.md") as tmp:
        tmp.write_text(f"# Study summary\n\n`{state['command']}` on {state['device']}\n\n{table}")
    done = sum(name in state["stages"] for name, _ in stages)
    print(table + f"\n{done}/{len(stages)} stages done" + ("" if done == len(stages) else ": run again to continue"))
    return 0
