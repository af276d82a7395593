"""The report's endpoint blocks: the pre-registered primary endpoint (printed first), the secondary controls, the
controls' geometry and the sweep at a glance; rendering only, every number from `summaries.Endpoints`."""

from __future__ import annotations

import numpy as np

from miscause.jobs.analysis.erasure.endpoints import Endpoint
from miscause.jobs.analysis.erasure.paired import MeanDifference
from miscause.jobs.analysis.erasure.summaries import Cell, Endpoints
from miscause.jobs.analysis.report.document import Block
from miscause.jobs.analysis.report.figures import figure_file

CONTROL_LABELS = {"matched": "location-matched (another image's saliency mask, same predicted class)",
                  "shifted": "shifted (the saliency mask at an offset that avoids it)",
                  "random": "random (as many anchors)", "saliency": "saliency"}


def points(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}"


def effect_text(effect: MeanDifference) -> str:
    """A difference in points with its 95% interval and one-sided p-value."""
    if effect.mean is None:
        return "-"
    interval = "" if effect.ci95 is None else f" [{points(effect.ci95[0])}, {points(effect.ci95[1])}]"
    p = "" if effect.p_value is None else f", p = {effect.p_value:.3g}"
    return f"{points(effect.mean)}{interval}{p}"


def _share(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def endpoint_row(name: str, e: Endpoint) -> list:
    rates = f"{_share(e.saliency.corrected)} vs {_share(e.control_rates.corrected)}"
    flips = (f"{_share(e.saliency.flipped_errors)} / {_share(e.saliency.flipped_correct)} vs "
             f"{_share(e.control_rates.flipped_errors)} / {_share(e.control_rates.flipped_correct)}")
    return [name, CONTROL_LABELS[e.control], e.draws, e.left_out, rates, effect_text(e.correction), flips,
            effect_text(e.specificity), effect_text(e.net_accuracy)]


ENDPOINT_HEADERS = ["model", "control", "draws", "images without it", "corrected: saliency vs control",
                    "correction difference, points [95% CI], one-sided p",
                    "flipped errors / correct: saliency vs control", "specificity interaction, points [95% CI], p",
                    "net accuracy difference, points [95% CI], p"]


def primary_blocks(endpoints: dict[str, Endpoints]) -> list[Block]:
    """The pre-registered primary endpoint and each model's verdict, first in the report."""
    if not endpoints:
        return []
    first = next(iter(endpoints.values()))
    verdicts = [f"{name}: {e.verdict} (correction {effect_text(e.primary.correction)}; specificity "
                f"{effect_text(e.primary.specificity)}; equivalence within +-{100 * e.primary.equivalence.margin:g} "
                f"points: {'shown' if e.primary.equivalence.equivalent else 'not shown'})"
                for name, e in endpoints.items()]
    return [
        ("h2", "Primary endpoint"),
        ("p", f"Fixed before the data was seen (docs/analysis.md). At the primary setting (saliency "
              f"`{first.method}` of the predicted class, p = {first.top_percent:g}, b = {first.box}, fill "
              f"`{first.fill}`, test split), per model: (a) the correction rate among the model's errors with "
              "saliency erasure minus with the location-matched control (the saliency mask of another image "
              f"with the same predicted class, the mean over {first.primary.draws} draws per image), and (b) "
              "the specificity interaction: (flip rate among errors - flip rate among correct answers) for "
              "saliency minus the same for the control (a flip: a changed prediction). The claim that erasure "
              "at the salient pixels corrects errors because it removes their cause is `supported` only where "
              "both 95% intervals lie above 0; `absent` where the correction difference is shown within the "
              "equivalence margin (two one-sided tests, 5%); otherwise `undetermined`. Everything after this "
              "section is secondary or exploratory."),
        ("table", ENDPOINT_HEADERS, [endpoint_row(name, e.primary) for name, e in endpoints.items()]),
        ("list", verdicts),
    ]


def geometry_rows(endpoints: dict[str, Endpoints]) -> list[list]:
    return [[name, CONTROL_LABELS[g.anchor], g.images, "-" if g.pixels is None else f"{g.pixels:.1f}",
             _share(g.central_share), _share(g.saliency_overlap), _share(g.max_saliency_overlap)]
            for name, e in endpoints.items() for g in e.geometry]


def sweep_grids(cells: tuple[Cell, ...], fill: str) -> dict[str, tuple[list[float], list[int], np.ndarray,
                                                                          np.ndarray]]:
    """The sweep's cells with the study's fill arranged per method as p x b grids for the figure."""
    grids = {}
    for method in dict.fromkeys(c.method for c in cells):
        mine = [c for c in cells if c.method == method and c.fill == fill]
        ps, bs = sorted({c.top_percent for c in mine}), sorted({c.box for c in mine})
        values, excludes = np.full((len(ps), len(bs)), np.nan), np.zeros((len(ps), len(bs)), bool)
        for c in mine:
            at = (ps.index(c.top_percent), bs.index(c.box))
            values[at] = np.nan if c.correction.mean is None else c.correction.mean
            excludes[at] = c.correction.ci95 is not None and (c.correction.ci95[0] > 0 or c.correction.ci95[1] < 0)
        grids[method] = (ps, bs, values, excludes)
    return grids


def secondary_blocks(endpoints: dict[str, Endpoints]) -> list[Block]:
    """The secondary controls, the masks' geometry, the sweep's figure and its further fills."""
    if not endpoints:
        return []
    fill_rows = [[name, c.method, f"`{c.fill}`", effect_text(c.correction), effect_text(c.specificity)]
                 for name, e in endpoints.items() for c in e.sweep if c.fill != e.fill]
    blocks: list[Block] = [
        ("h3", "Secondary endpoints: the other controls"),
        ("p", "The primary setting's two quantities against the shifted control (the saliency mask at a non-zero "
              "wrapped offset drawn uniformly among those whose mask shares no pixel with the saliency mask; "
              "images whose mask meets every shift of itself have none and are left out) and against the random "
              "control (as many anchors drawn uniformly, one draw)."),
        ("table", ENDPOINT_HEADERS, [endpoint_row(name, s) for name, e in endpoints.items() for s in e.secondary]),
        ("h3", "Where the controls erase"),
        ("p", "At the primary setting, per model and anchor kind: the images that have it, the mean pixels erased, "
              "the mean share of them in the image's central half (16 x 16 of 32 x 32) and inside the saliency "
              "mask (means over the draws of each image, then over images). The location-matched control should "
              "match the saliency mask's central share; the shifted control never overlaps it."),
        ("table", ["model", "anchors", "images", "pixels (mean)", "central share", "inside the saliency mask",
                   "largest share inside"], geometry_rows(endpoints)),
        ("h3", "The sweep"),
        ("p", "Exploratory: every setting p x b of every saliency method (Grad-CAM where the model names a layer), "
              "the correction difference against the location-matched control with one draw per image, in "
              "points; * marks a cell whose 95% interval excludes 0 (not corrected for the many cells)."),
    ]
    blocks += [("figure", figure_file("sweep", name), f"{name}: correction difference per setting and method")
               for name in endpoints]
    if fill_rows:
        blocks += [("p", "The further fills at the primary setting, per method, against the location-matched "
                         "control (one draw):"),
                   ("table", ["model", "method", "fill", "correction difference, points [95% CI], p",
                              "specificity interaction, points [95% CI], p"], fill_rows)]
    return blocks
