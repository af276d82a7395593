"""The report's blocks for the erasure study's controls: every anchor kind, the runner-up baseline, the fill
sweep and the deletion and insertion curves, one model at a time; and the saliency maps' model-randomisation
sanity check, all models in one table."""

from __future__ import annotations

from miscause.jobs.analysis.erasure.controls import MATCHED
from miscause.jobs.analysis.erasure.randomisation import SANITY_THRESHOLD, WEIGHTS
from miscause.jobs.analysis.erasure.run import ANCHORS
from miscause.jobs.analysis.erasure.summaries import test_key
from miscause.jobs.analysis.report.document import Block
from miscause.jobs.analysis.report.figures import figure_file

ANCHOR_LABELS = {"saliency": "saliency", "random": "random (as many anchors)",
                 MATCHED: "location-matched (one draw)"}


def _percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def _share(part: int, whole: int) -> str:
    return f"{part} / {whole} ({_percent(part / whole if whole else 0.0)})"


def _number(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def anchors_of(setting: dict) -> list[str]:
    """The anchor kinds a setting's summary holds, saliency first."""
    return [a for a in ANCHORS if a in setting]


def outcome_rows(setting: dict) -> list[list]:
    """The default setting: one row per anchor kind, its erased pixels included."""
    return [[ANCHOR_LABELS[a], o["corrected"], o["third_class"], o["unchanged"], _percent(o["corrected_rate"]),
             f"{o['broken']} / {o['correct']}", _percent(o["broken_rate"]), f"{o['mean_erased_pixels']:.1f}"]
            for a in anchors_of(setting) for o in (setting[a],)]


OUTCOME_HEADERS = ["anchors", "corrected", "third class", "unchanged", "corrected rate", "broken / correct",
                   "broken rate", "erased pixels (mean)"]


def sweep_table(settings: list[dict]) -> Block:
    """The sweep: per setting and anchor kind the corrected and broken rates, erased pixels, and the tests."""
    anchors = anchors_of(settings[0])
    controls = anchors[1:]
    headers = (["p", "b"] + [f"{a} corrected" for a in anchors] + [f"{a} broken" for a in anchors]
               + [f"{a} pixels" for a in anchors] + [f"McNemar p vs {c}" for c in controls])
    rows = [[x["top_percent"], x["box"]] + [_percent(x[a]["corrected_rate"]) for a in anchors]
            + [_percent(x[a]["broken_rate"]) for a in anchors] + [f"{x[a]['mean_erased_pixels']:.0f}" for a in anchors]
            + [f"{x[test_key(c)]['p_value']:.3g}" for c in controls] for x in settings]
    return ("table", headers, rows)


def test_text(setting: dict) -> str:
    """The paired tests of the default setting, in words."""
    return "; ".join(f"Against {c}: saliency-only corrections {t['saliency_only']}, {c}-only {t['random_only']}, "
                     f"one-sided McNemar p = {t['p_value']:.3g}"
                     for c in anchors_of(setting)[1:] for t in (setting[test_key(c)],)) + "."


def runner_up_blocks(summary: dict, setting: dict) -> list[Block]:
    """How many corrections only hand the answer to the model's second choice, and the runner-up oracle."""
    oracle = summary["runner_up_oracle"]
    rows = []
    for anchor, r in setting["runner_up"].items():
        changed = r["runner_up_on_changed"]
        rows.append([ANCHOR_LABELS[anchor], _share(r["to_runner_up"], r["changed"]),
                     _share(r["runner_up_true"]["corrected"], r["runner_up_true"]["errors"]),
                     _share(r["runner_up_other"]["corrected"], r["runner_up_other"]["errors"]),
                     f"{setting[anchor]['corrected']} / {setting[anchor]['broken']}",
                     f"{changed['corrected']} / {changed['broken']} (of {changed['applied']})"])
    return [
        ("p", f"Runner-up baseline (default setting). Runner-up: the class of the second-largest logit. "
              f"Runner-up oracle, answering the runner-up on every image: corrects {oracle['corrected']} of "
              f"{oracle['errors']} errors ({_percent(oracle['corrected_rate'])}, the errors whose runner-up is the "
              f"true class) and breaks all {oracle['correct']} correct answers. An erasure that mostly corrects "
              "errors whose runner-up is true, by moving them to the runner-up, shows that the saliency map found "
              "the evidence for the predicted class, not what caused the error."),
        ("table", ["anchors", "changed errors to the runner-up", "corrected, runner-up true",
                   "corrected, runner-up other", "erasure corrected / broken",
                   "runner-up rule on the images the erasure changed: corrected / broken"], rows),
    ]


def fill_blocks(fills: dict | None) -> list[Block]:
    """The fill sweep at its setting: per fill the corrected and broken rates of every anchor kind, the tests."""
    if not fills:
        return []
    anchors = anchors_of(fills["fills"][0])
    headers = (["fill"] + [f"{a} corrected" for a in anchors] + [f"{a} broken" for a in anchors]
               + [f"McNemar p vs {c}" for c in anchors[1:]])
    rows = [[f"`{f['fill']}`"] + [_percent(f[a]["corrected_rate"]) for a in anchors]
            + [_percent(f[a]["broken_rate"]) for a in anchors]
            + [f"{f[test_key(c)]['p_value']:.3g}" for c in anchors[1:]] for f in fills["fills"]]
    return [("p", f"Fill sweep at p = {fills['top_percent']}, b = {fills['box']}: what erased pixels become "
                  "(`mean`: the dataset mean, `black`: pixel value 0, `image_mean`: the image's own mean per "
                  "channel, `blur`: the image blurred with a Gaussian)."),
            ("table", headers, rows)]


def curve_blocks(name: str, curves: dict | None) -> list[Block]:
    """The deletion and insertion curves: their figure and the areas under them."""
    if not curves:
        return []
    rows = [[order] + [_number(by_mode[mode][key]) for mode in ("deletion", "insertion")
                       for key in ("auc", "auc_errors")] for order, by_mode in curves["orders"].items()]
    return [("p", f"Deletion and insertion curves (Petsiuk et al., 2018) on {curves['images']} test images "
                  f"({curves['errors']} misclassified), {curves['steps']} steps: the probability of the predicted "
                  f"class as its pixels are deleted (filled with `{curves['deletion_fill']}`) or inserted into a "
                  f"`{curves['insertion_canvas']}` canvas, most salient first or in random order. Lower deletion "
                  "and higher insertion areas mean a more faithful ranking."),
            ("table", ["order", "deletion AUC", "deletion AUC (errors)", "insertion AUC", "insertion AUC (errors)"],
             rows),
            ("figure", figure_file("curves", name),
             f"{name}: deletion and insertion curves, per saliency method and random")]


def control_blocks(name: str, summary: dict, setting: dict) -> list[Block]:
    """Every control block of one model, after its default-setting outcomes."""
    return (runner_up_blocks(summary, setting) + fill_blocks(summary.get("fills"))
            + curve_blocks(name, summary.get("curves")))


def randomisation_blocks(summaries: dict[str, dict] | None) -> list[Block]:
    """The model-randomisation section: one row per model and saliency method (none when no model ran it)."""
    if not summaries:
        return []
    rows = [[name, f"`{method}`", r["images"], _number(r["median"]),
             "-" if r["iqr"] is None else f"{_number(r['iqr'])} [{_number(r['quartiles'][0])}, "
                                           f"{_number(r['quartiles'][1])}]", r["nan"],
             "-" if r["median"] is None else "no" if r["median"] >= SANITY_THRESHOLD else "yes"]
            for name, methods in summaries.items() for method, r in methods.items()]
    images = sorted({r["images"] for methods in summaries.values() for r in methods.values()})
    seeds = sorted({r["seed"] for methods in summaries.values() for r in methods.values()})
    return [("h2", "Saliency sanity check: model randomisation"),
            ("p", f"Model-randomisation check (Adebayo et al., 2018) on {', '.join(map(str, images))} test images per "
                  f"model: each saliency map of the predicted class is compared with the map of the same model with "
                  f"{WEIGHTS} (seed {', '.join(map(str, seeds))}; biases and normalisation kept), by the Spearman "
                  "rank correlation of the two maps of each image; NaN counts the images whose map is constant. A "
                  f"method whose maps correlate highly with the randomised model's (median >= {SANITY_THRESHOLD}) "
                  "does not explain the model."),
            ("table", ["model", "method", "images", "median Spearman", "IQR [q25, q75]", "NaN (constant map)",
                       "explains the model"], rows)]
