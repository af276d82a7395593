"""The CPU study's report (docs/study-cpu/report) is made from its committed result files alone: rerunning the command
written at the top of its report.md, in the repository, gives the committed metrics.json, key for key."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from test_analysis_fixture import assert_same, scrubbed

from miscause.cli import main

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "docs" / "study-cpu" / "report"


def report_command(report: Path) -> list[str]:
    """The words of the command in the report's first code block (after "Command:"), without `miscause`."""
    block = report.read_text().split("Command:", 1)[1].split("```", 2)[1]
    words = shlex.split(block.strip())
    assert words[:2] == ["miscause", "analyze"], words[:2]
    return words[1:]


def with_out(words: list[str], out: Path) -> list[str]:
    """The command with its `--out` folder replaced by `out`."""
    position = words.index("--out")
    return [*words[:position + 1], str(out), *words[position + 2:]]


@pytest.mark.timeout(0)  # the whole report: several minutes, more on a loaded machine
def test_the_report_is_remade_from_the_committed_result_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    words = report_command(STUDY / "report.md")
    results = [Path(w) for w in words[words.index("--results") + 1:] if w.endswith(".npz")]
    assert results and all((REPO / path).is_file() for path in results), "the command names committed files"
    monkeypatch.chdir(REPO)
    assert main(with_out(words, tmp_path / "report")) == 0
    made = scrubbed(json.loads((tmp_path / "report" / "metrics.json").read_text()), str(tmp_path))
    kept = scrubbed(json.loads((STUDY / "metrics.json").read_text()), str(REPO))
    made.pop("command")
    kept.pop("command")
    assert_same(made, kept)
