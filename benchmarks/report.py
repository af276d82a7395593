"""What every benchmark records beside its numbers, and how it writes them: JSON and markdown under
`benchmarks/results/`, and a plain-text table printed last.

Each result names the machine (CPU model, cores, GPU), the library versions, the git commit, the date, the
command that produced it, its settings, and the load average before and after, so a number can be traced to
how it was measured and what else ran beside it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from miscause.atomic import atomic_path

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("miscause", "torch", "onnxruntime", "grpcio", "numpy", "protobuf")


@dataclass
class Table:
    """A titled table: column names, then rows of numbers or strings (floats shown to 4 significant digits)."""

    title: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)

    def cells(self) -> list[list[str]]:
        return [[_cell(value) for value in row] for row in self.rows]

    def text(self) -> str:
        """Fixed-width text, numbers right-aligned."""
        cells = self.cells()
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(self.columns)]
        numeric = [all(isinstance(row[i], int | float | None) for row in self.rows) for i in range(len(self.columns))]

        def line(values: list[str]) -> str:
            return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True))
        rule = "  ".join("-" * w for w in widths)
        return "\n".join([self.title, line(self.columns), rule, *(line(r) for r in cells)])

    def markdown(self) -> str:
        head = f"| {' | '.join(self.columns)} |\n|{'|'.join('---' for _ in self.columns)}|"
        body = "\n".join(f"| {' | '.join(row)} |" for row in self.cells())
        return f"**{self.title}**\n\n{head}\n{body}"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return "" if value is None else str(value)


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def device_tag(device: str) -> str:
    """`cpu`, or `cuda` with the GPU's name, as used in result file names."""
    if device.startswith("cuda"):
        name = (gpu_name() or "gpu").lower()
        return "cuda-" + "".join(c if c.isalnum() else "-" for c in name).strip("-")
    return "cpu"


def git_commit() -> str | None:
    """HEAD's commit, with `-dirty` when the working tree differs from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def environment() -> dict:
    """Machine, versions and commit; the load average is sampled by `Run`."""
    from miscause.device import cpu_model

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "gpu": gpu_name(), "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions, "commit": git_commit()}


def command_line() -> str:
    """The command that is running, as a user would type it."""
    argv = sys.argv[1:] if Path(sys.argv[0]).name in ("miscause", "__main__.py") else sys.argv
    return shlex.join(["miscause", *argv])


@dataclass
class Run:
    """One benchmark run: what it measured with, when, and under what load; `finish` writes it."""

    part: str
    settings: dict
    device: str = "cpu"
    started: str = field(default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    load_before: tuple[float, float, float] = field(default_factory=os.getloadavg)
    command: str = field(default_factory=command_line)

    def finish(self, tables: list[Table], data: dict, notes: list[str], out_dir: Path | None,
               name: str | None = None) -> Path | None:
        """Write `<out>/<part>-<device>.json` and `.md` (unless `out_dir` is None) and print the tables last."""
        path = self.write(tables, data, notes, out_dir, name)
        if path is not None:
            print(f"wrote {path} and {path.with_suffix('.md').name}")
        for note in notes:
            print(f"note: {note}")
        for table in tables:
            print()
            print(table.text())
        return path

    def write(self, tables: list[Table], data: dict, notes: list[str], out_dir: Path | None,
              name: str | None = None) -> Path | None:
        """Write the record so far, atomically, without printing: a run cut short keeps what it measured."""
        record = {
            "part": self.part, "started": self.started,
            "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": self.command, "device": self.device, "environment": environment(),
            "load_average": {"before": list(self.load_before), "after": list(os.getloadavg())},
            "settings": self.settings, "tables": [asdict(t) for t in tables], "data": data, "notes": notes,
        }
        path = None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"{name or self.part + '-' + device_tag(self.device)}.json"
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
            with atomic_path(path.with_suffix(".md")) as tmp:
                tmp.write_text(markdown(record, tables))
        return path


def markdown(record: dict, tables: list[Table]) -> str:
    """The run as a markdown page: how it was measured, then the tables and notes."""
    env = record["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    load = record["load_average"]
    lines = [
        f"# `{record['part']}` benchmark on {record['device']}", "",
        f"- command: `{record['command']}`",
        f"- date: {record['started']} to {record['finished']} (UTC)",
        f"- machine: {env['cpu']}, {env['cpu_count']} logical CPUs" + (f", {env['gpu']}" if env["gpu"] else ""),
        f"- versions: Python {env['python']}, {versions}",
        f"- commit: {env['commit']}",
        "- load average (1/5/15 min): before " + " / ".join(f"{x:.2f}" for x in load["before"])
        + ", after " + " / ".join(f"{x:.2f}" for x in load["after"]),
        "- settings: " + ", ".join(f"{k}={v}" for k, v in record["settings"].items()), "",
    ]
    for table in tables:
        lines += [table.markdown(), ""]
    if record["notes"]:
        lines += ["## Notes", ""] + [f"- {note}" for note in record["notes"]] + [""]
    return "\n".join(lines)


def add_output_arguments(parser) -> None:
    """`--out` and `--no-write`, shared by every part."""
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default: {RESULTS})")
    parser.add_argument("--no-write", action="store_true", help="print the tables only; write no files")
