"""The analysis output directory: metrics.json, report.md, report.html, figures/ and networks/, all or nothing.

Everything is rendered from `pipeline.Results` first, then written at once. Layouts are documented in
docs/analysis.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import networkx as nx

from miscause.atomic import atomic_directory
from miscause.errors import MiscauseError
from miscause.jobs.analysis.erasure.randomisation import ModelRandomisation
from miscause.jobs.analysis.patterns.misclassification import Analysis
from miscause.jobs.analysis.patterns.networks import network_json
from miscause.jobs.analysis.pipeline import ErasureResults, Results
from miscause.jobs.analysis.report import figures
from miscause.jobs.analysis.report.document import to_html, to_markdown
from miscause.jobs.analysis.report.endpoints import sweep_grids
from miscause.jobs.analysis.report.figures import figure_file, file_stem
from miscause.jobs.analysis.report.metrics import metrics, plain
from miscause.jobs.analysis.report.sections import document

ENTRIES = frozenset({"figures", "networks", "metrics.json", "report.md", "report.html"})


def check_out(out: str | os.PathLike) -> None:
    """Refuse an output folder the report would replace with something else in it (result files, say): the
    report replaces its folder whole, so anything but an earlier report there would be lost."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise MiscauseError(f"--out {folder} exists and is not a directory")
    others = sorted(entry.name for entry in folder.iterdir() if entry.name not in ENTRIES) if folder.is_dir() else []
    if others:
        raise MiscauseError(f"--out {folder} holds {', '.join(others)}, which is not part of a report; the report "
                            "replaces its folder whole, so give a new or a report's folder")


def figure_set(analysis: Analysis, erasure: ErasureResults | None,
               randomisation: dict[str, ModelRandomisation] | None = None) -> dict[str, bytes]:
    """Every figure of the report, by file name."""
    out = {figure_file("randomisation", name): figures.randomisation_figure(name, check)
           for name, check in (randomisation or {}).items()}
    for name, m in analysis.models.items():
        out[figure_file("confusion", name)] = figures.confusion_figure(name, analysis.classes, m.rates,
                                                                       m.conditional)
        out[figure_file("network", name)] = figures.network_figure(
            m.network, f"{name}: misclassification network", "weight", "weight", ".2f")
    out["network-consensus.png"] = figures.network_figure(
        analysis.consensus, f"consensus of {len(analysis.models)} models (edge label: models)", "n_models",
        "n_models", "d")
    out["similarity.png"] = figures.similarity_figure(list(analysis.models), analysis.spearman, analysis.jaccard)
    if erasure:
        for name, e in erasure.endpoints.items():
            out[figure_file("sweep", name)] = figures.sweep_figure(name, sweep_grids(e.sweep, e.fill))
        for name, summary in erasure.summaries.items():
            out[figure_file("erasure", name)] = figures.erasure_figure(name, summary.settings)
            if erasure.curves.get(name):
                out[figure_file("curves", name)] = figures.curves_figure(name, erasure.curves[name])
            if erasure.examples.get(name):
                out[figure_file("examples", name)] = figures.examples_figure(erasure.examples[name])
    return out


def write_network(graph: nx.DiGraph, folder: Path, stem: str) -> None:
    """GraphML and JSON of one network."""
    nx.write_graphml(graph, folder / f"{stem}.graphml")
    (folder / f"{stem}.json").write_text(json.dumps(plain(network_json(graph)), indent=1, allow_nan=False))


def write_report(out: str | os.PathLike, results: Results) -> Path:
    """Render everything first, then write the directory atomically: complete or untouched."""
    check_out(out)
    analysis = results.analysis
    figure_bytes = figure_set(analysis, results.erasure, results.randomisation)
    blocks = document(results)
    numbers = json.dumps(metrics(results), indent=1, allow_nan=False)
    with atomic_directory(out) as tmp:
        (tmp / "figures").mkdir()
        for name, data in figure_bytes.items():
            (tmp / "figures" / name).write_bytes(data)
        (tmp / "networks").mkdir()
        for name, m in analysis.models.items():
            write_network(m.network, tmp / "networks", f"model-{file_stem(name)}")
        write_network(analysis.consensus, tmp / "networks", "consensus")
        (tmp / "metrics.json").write_text(numbers + "\n")
        (tmp / "report.md").write_text(to_markdown(blocks))
        (tmp / "report.html").write_text(to_html(blocks, figure_bytes, "Misclassification analysis"))
    return Path(out)
