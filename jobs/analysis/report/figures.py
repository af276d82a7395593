"""The report's figures, each returned as PNG bytes (matplotlib `Figure` objects, no global pyplot state)."""

from __future__ import annotations

import io
import re

import networkx as nx
import numpy as np
from matplotlib.figure import Figure

from miscause.jobs.analysis.erasure.curves import CurveSummary
from miscause.jobs.analysis.erasure.examples import Example
from miscause.jobs.analysis.erasure.randomisation import MEASURES, ModelRandomisation
from miscause.jobs.analysis.erasure.summaries import Setting


def file_stem(name: str) -> str:
    """A model name made safe as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def figure_file(kind: str, name: str) -> str:
    """The file name of one model's figure of `kind` (confusion, network, erasure, curves, examples,
    randomisation)."""
    return f"{kind}-{file_stem(name)}.png"


def png(figure: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _heatmap(ax, matrix: np.ndarray, rows: list[str], columns: list[str], title: str, fmt: str,
             vmin: float | None = None, vmax: float | None = None, cmap: str = "viridis") -> None:
    shown = np.ma.masked_invalid(matrix)
    image = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_title(title, fontsize=9)
    if len(rows) <= 12:
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value) and value != 0:
                ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=5.5, color="white")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)


def confusion_figure(name: str, classes: tuple[str, ...], rates: np.ndarray, conditional: np.ndarray) -> bytes:
    """Row-normalised confusion and conditional confusion side by side (rows: true class)."""
    figure = Figure(figsize=(12, 4.8))
    left, right = figure.subplots(1, 2, gridspec_kw={"wspace": 0.45})
    _heatmap(left, rates, list(classes), list(classes), f"{name}: P(pred | true)", ".2f", 0, 1)
    _heatmap(right, conditional, list(classes), list(classes), f"{name}: P(pred | true, pred != true)",
             ".2f", 0, max(float(conditional.max()), 1e-9))
    for ax in (left, right):
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    return png(figure)


def network_figure(graph: nx.DiGraph, title: str, width_key: str, label_key: str, label_format: str) -> bytes:
    """A misclassification network on a circle; edge width from `width_key`, edge labels from `label_key`."""
    figure = Figure(figsize=(6, 6))
    ax = figure.subplots()
    positions = nx.circular_layout(graph)
    widths = [data[width_key] for _, _, data in graph.edges(data=True)]
    top = max(widths, default=1) or 1
    nx.draw_networkx_nodes(graph, positions, ax=ax, node_color="#dde6f2", node_size=1500)
    nx.draw_networkx_labels(graph, positions, ax=ax, font_size=8)
    nx.draw_networkx_edges(graph, positions, ax=ax, width=[0.8 + 4 * w / top for w in widths], arrowsize=14,
                           node_size=1500, connectionstyle="arc3,rad=0.12", edge_color="#444444")
    nx.draw_networkx_edge_labels(graph, positions, ax=ax, font_size=7, connectionstyle="arc3,rad=0.12",
                                 edge_labels={(s, t): format(d[label_key], label_format)
                                              for s, t, d in graph.edges(data=True)})
    ax.set_title(title if graph.number_of_edges() else f"{title} (no significant edges)", fontsize=10)
    ax.margins(0.12)
    ax.set_axis_off()
    return png(figure)


def similarity_figure(names: list[str], spearman: np.ndarray, jaccard: np.ndarray) -> bytes:
    """Model x model: rank correlation of conditional confusions, Jaccard of significant edges."""
    size = 4 + 0.4 * len(names)
    figure = Figure(figsize=(2 * size + 1, size))
    left, right = figure.subplots(1, 2)
    _heatmap(left, spearman, names, names, "Spearman of conditional confusions", ".2f", -1, 1, "coolwarm")
    _heatmap(right, jaccard, names, names, "Jaccard of significant edges", ".2f", 0, 1)
    return png(figure)


ANCHOR_STYLES = {"saliency": "-o", "random": "--x", "matched": ":s"}


def erasure_figure(name: str, settings: tuple[Setting, ...]) -> bytes:
    """The sweep: errors corrected and correct answers broken, saliency-anchored vs each control, per box."""
    figure = Figure(figsize=(11, 4))
    corrected_ax, broken_ax = figure.subplots(1, 2)
    boxes = sorted({s.box for s in settings})
    colors = dict(zip(boxes, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"], strict=False))
    anchors = [a for a in ANCHOR_STYLES if a in settings[0].compared.outcomes]
    for box in boxes:
        rows = sorted((s for s in settings if s.box == box), key=lambda s: s.top_percent)
        p = [s.top_percent for s in rows]
        for ax, key in ((corrected_ax, "corrected_rate"), (broken_ax, "broken_rate")):
            for anchor in anchors:
                ax.plot(p, [getattr(s.compared.outcomes[anchor], key) for s in rows], ANCHOR_STYLES[anchor],
                        color=colors.get(box), label=f"{anchor}, box {box}")
    corrected_ax.set_title(f"{name}: misclassified images corrected", fontsize=9)
    broken_ax.set_title(f"{name}: correct images broken (control b)", fontsize=9)
    for ax in (corrected_ax, broken_ax):
        ax.set_xscale("log")
        ax.set_xlabel("top percent of saliency used as anchors", fontsize=8)
        ax.set_ylabel("fraction", fontsize=8)
        ax.grid(alpha=0.3)
    corrected_ax.legend(fontsize=6)
    return png(figure)


def sweep_figure(name: str, grids: dict[str, tuple[list[float], list[int], np.ndarray, np.ndarray]]) -> bytes:
    """The sweep at a glance: per saliency method a p x b grid of the correction difference against the
    location-matched control, in points, each cell marked * where its 95% interval excludes 0. `grids`: method ->
    (p values, b values, differences [P,B] (NaN: undefined), interval excludes 0 [P,B])."""
    figure = Figure(figsize=(3.6 * len(grids) + 0.8, 3.6))
    axes = np.atleast_1d(figure.subplots(1, len(grids)))
    limit = max([float(np.nanmax(np.abs(d))) for _, _, d, _ in grids.values() if np.isfinite(d).any()] + [1e-9])
    for ax, (method, (ps, bs, differences, excludes)) in zip(axes, grids.items(), strict=True):
        image = ax.imshow(100 * np.ma.masked_invalid(differences), cmap="coolwarm", vmin=-100 * limit,
                          vmax=100 * limit)
        ax.set_xticks(range(len(bs)), [str(b) for b in bs], fontsize=8)
        ax.set_yticks(range(len(ps)), [f"{p:g}" for p in ps], fontsize=8)
        ax.set_xlabel("box b", fontsize=8)
        ax.set_ylabel("top percent p", fontsize=8)
        ax.set_title(f"{name}: {method}", fontsize=9)
        for (i, j), value in np.ndenumerate(differences):
            if np.isfinite(value):
                ax.text(j, i, f"{100 * value:+.1f}{'*' if excludes[i, j] else ''}", ha="center", va="center",
                        fontsize=7)
    figure.colorbar(image, ax=list(axes), fraction=0.03, pad=0.02,
                    label="corrected, saliency - location-matched (points)")
    return png(figure)


def curves_figure(name: str, curves: CurveSummary) -> bytes:
    """Deletion and insertion: mean probability of the predicted class against the fraction of pixels changed,
    one line per saliency method, the random order dashed."""
    figure = Figure(figsize=(11, 4))
    axes = figure.subplots(1, 2)
    fraction = np.linspace(0, 1, curves.steps + 1)
    for ax, mode in zip(axes, ("deletion", "insertion"), strict=True):
        for order, by_mode in curves.orders.items():
            auc = by_mode[mode].auc
            ax.plot(fraction, by_mode[mode].curve, "--" if order == "random" else "-",
                    color="black" if order == "random" else None,
                    label=order if auc is None else f"{order} (AUC {auc:.3f})")
        ax.set_title(f"{name}: {mode}, {curves.images} images", fontsize=9)
        ax.set_xlabel(f"fraction of pixels {'deleted' if mode == 'deletion' else 'inserted'}", fontsize=8)
        ax.set_ylabel("probability of the predicted class", fontsize=8)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return png(figure)


def randomisation_figure(name: str, check: ModelRandomisation) -> bytes:
    """The cascade: per measure, each method's mean similarity to the trained maps against the step (layers
    randomised from the top), its 95% interval shaded, the seed-to-seed reference dotted."""
    figure = Figure(figsize=(11, 4))
    axes = figure.subplots(1, len(MEASURES))
    for ax, measure in zip(axes, MEASURES, strict=True):
        for method, cascade in check.methods.items():
            steps = [step.similarity[measure] for step in cascade.steps]
            x = np.arange(1, len(steps) + 1)
            mean = np.array([np.nan if s.mean is None else s.mean for s in steps])
            low, high = (np.array([np.nan if s.ci95[k] is None else s.ci95[k] for s in steps]) for k in (0, 1))
            (line,) = ax.plot(x, mean, "o-", markersize=3, label=method)
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
            reference = cascade.reference[measure].mean if cascade.reference else None
            if reference is not None:
                ax.axhline(reference, color=line.get_color(), linestyle=":", linewidth=1)
        layers = [step.layer for step in next(iter(check.methods.values())).steps] if check.methods else []
        ax.set_xticks(range(1, len(layers) + 1), layers, rotation=60, ha="right", fontsize=6)
        ax.set_title(f"{name}: {measure} to the trained map, {check.images} images", fontsize=9)
        ax.set_xlabel("randomised from the top down to", fontsize=8)
        ax.set_ylim(-0.2, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return png(figure)


def examples_figure(examples: list[Example]) -> bytes:
    """One row per image: original, saliency overlay, erased; labels before and after erasure."""
    rows = len(examples)
    figure = Figure(figsize=(6, 2 * rows))
    axes = np.asarray(figure.subplots(rows, 3, squeeze=False))
    for row, example in zip(axes, examples, strict=True):
        row[0].imshow(example.image)
        row[0].set_title(f"true {example.true}", fontsize=7)
        row[1].imshow(example.image)
        row[1].imshow(example.saliency, cmap="inferno", alpha=0.6)
        row[1].set_title(f"saliency of {example.before}", fontsize=7)
        row[2].imshow(example.erased)
        row[2].set_title(f"erased: {example.before} -> {example.after}", fontsize=7)
    for ax in axes.reshape(-1):
        ax.set_axis_off()
    return png(figure)
