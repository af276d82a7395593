"""The report's blocks for the erasure study's controls: every anchor kind, the runner-up baseline, the fill
sweep and the deletion and insertion curves, one model at a time; and the saliency maps' model-randomisation
sanity check, all models in one table."""

from __future__ import annotations

from miscause.jobs.analysis.erasure.controls import MATCHED
from miscause.jobs.analysis.erasure.curves import BETTER, MODES, AgainstRandom, CurveSummary
from miscause.jobs.analysis.erasure.paired import MeanDifference, MeanInterval
from miscause.jobs.analysis.erasure.randomisation import MEASURES, ModelRandomisation
from miscause.jobs.analysis.erasure.summaries import ErasureSummary, FillSweep, Setting
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


def outcome_rows(setting: Setting) -> list[list]:
    """The default setting: one row per anchor kind, its erased pixels included."""
    return [[ANCHOR_LABELS[a], o.corrected, o.third_class, o.unchanged, _percent(o.corrected_rate),
             f"{o.broken} / {o.correct}", _percent(o.broken_rate), f"{setting.erased_pixels[a]:.1f}"]
            for a in setting.compared.anchors for o in (setting.compared.outcomes[a],)]


OUTCOME_HEADERS = ["anchors", "corrected", "third class", "unchanged", "corrected rate", "broken / correct",
                   "broken rate", "erased pixels (mean)"]


def sweep_table(settings: tuple[Setting, ...]) -> Block:
    """The sweep: per setting and anchor kind the corrected and broken rates, erased pixels, and the tests."""
    anchors = settings[0].compared.anchors
    controls = anchors[1:]
    headers = (["p", "b"] + [f"{a} corrected" for a in anchors] + [f"{a} broken" for a in anchors]
               + [f"{a} pixels" for a in anchors] + [f"McNemar p vs {c}" for c in controls])
    rows = [[x.top_percent, x.box] + [_percent(o[a].corrected_rate) for a in anchors]
            + [_percent(o[a].broken_rate) for a in anchors] + [f"{x.erased_pixels[a]:.0f}" for a in anchors]
            + [f"{x.compared.tests[c].p_value:.3g}" for c in controls]
            for x in settings for o in (x.compared.outcomes,)]
    return ("table", headers, rows)


def test_text(setting: Setting) -> str:
    """The paired tests of the default setting, in words."""
    return "; ".join(f"Against {c}: saliency-only corrections {t.saliency_only}, {c}-only {t.control_only}, "
                     f"one-sided McNemar p = {t.p_value:.3g}"
                     for c in setting.compared.anchors[1:] for t in (setting.compared.tests[c],)) + "."


def runner_up_blocks(summary: ErasureSummary, setting: Setting) -> list[Block]:
    """How many corrections only hand the answer to the model's second choice, and the runner-up oracle."""
    oracle = summary.runner_up_oracle
    rows = []
    for anchor, r in setting.runner_up.items():
        changed, outcomes = r.runner_up_on_changed, setting.compared.outcomes[anchor]
        rows.append([ANCHOR_LABELS[anchor], _share(r.to_runner_up, r.changed),
                     _share(r.runner_up_true.corrected, r.runner_up_true.errors),
                     _share(r.runner_up_other.corrected, r.runner_up_other.errors),
                     f"{outcomes.corrected} / {outcomes.broken}",
                     f"{changed.corrected} / {changed.broken} (of {changed.applied})"])
    return [
        ("p", f"Runner-up baseline (default setting). Runner-up: the class of the second-largest logit. "
              f"Runner-up oracle, answering the runner-up on every image: corrects {oracle.corrected} of "
              f"{oracle.errors} errors ({_percent(oracle.corrected_rate)}, the errors whose runner-up is the "
              f"true class) and breaks all {oracle.correct} correct answers. An erasure that mostly corrects "
              "errors whose runner-up is true, by moving them to the runner-up, shows that the saliency map found "
              "the evidence for the predicted class, not what caused the error."),
        ("table", ["anchors", "changed errors to the runner-up", "corrected, runner-up true",
                   "corrected, runner-up other", "erasure corrected / broken",
                   "runner-up rule on the images the erasure changed: corrected / broken"], rows),
    ]


def fill_blocks(fills: FillSweep | None) -> list[Block]:
    """The fill sweep at its setting: per fill the corrected and broken rates of every anchor kind, the tests."""
    if not fills:
        return []
    anchors = fills.fills[0].compared.anchors
    headers = (["fill"] + [f"{a} corrected" for a in anchors] + [f"{a} broken" for a in anchors]
               + [f"McNemar p vs {c}" for c in anchors[1:]])
    rows = [[f"`{f.fill}`"] + [_percent(f.compared.outcomes[a].corrected_rate) for a in anchors]
            + [_percent(f.compared.outcomes[a].broken_rate) for a in anchors]
            + [f"{f.compared.tests[c].p_value:.3g}" for c in anchors[1:]] for f in fills.fills]
    return [("p", f"Fill sweep at p = {fills.top_percent}, b = {fills.box}: what erased pixels become "
                  "(`mean`: the dataset mean, `black`: pixel value 0, `image_mean`: the image's own mean per "
                  "channel, `blur`: the image blurred with a Gaussian)."),
            ("table", headers, rows)]


def _interval(ci: tuple[float | None, float | None] | None, fmt: str = ".3f") -> str:
    return "-" if ci is None or None in ci else f"[{format(ci[0], fmt)}, {format(ci[1], fmt)}]"


def _difference(d: MeanDifference) -> str:
    p = "-" if d.p_value is None else f"{d.p_value:.3g}"
    return f"{_number(d.mean, '+.3f')} {_interval(d.ci95, '+.3f')}, p = {p}"


def versus_random_blocks(name: str, versus: dict[str, dict[str, AgainstRandom]]) -> list[Block]:
    """Each method's areas against the random order's on the same images, and in words where it is no better."""
    if not versus:
        return []
    rows = [[f"`{method}`"] + [f"{_difference(c.difference)}: {c.verdict}" for c in (by_mode[m] for m in MODES)]
            for method, by_mode in versus.items()]
    short = [f"`{method}` {mode} ({by_mode[mode].verdict})" for method, by_mode in versus.items() for mode in MODES
             if by_mode[mode].verdict != BETTER]
    alpha = next(c.alpha for by_mode in versus.values() for c in by_mode.values())
    verdict = (f"{name}: no better than random in " + ", ".join(short) + "." if short else
               f"{name}: every method beats the random order in both modes.")
    return [("p", "Each method against the random order on the same images: the mean per-image difference of the "
                  "areas (method minus random) with its 95% t interval and the one-sided paired t test in the "
                  f"faithful direction (deletion below 0, insertion above 0), level {alpha}. \"Worse than "
                  "random\": the whole interval on the unfaithful side; \"not shown better\": the test does not "
                  "reject."),
            ("table", ["method", "deletion AUC - random", "insertion AUC - random"], rows),
            ("p", verdict)]


def curve_blocks(name: str, curves: CurveSummary | None) -> list[Block]:
    """The deletion and insertion curves: their figure, the areas under them and each method against random."""
    if not curves:
        return []
    rows = [[order] + [_number(value) for mode in MODES for value in (by_mode[mode].auc, by_mode[mode].auc_errors)]
            for order, by_mode in curves.orders.items()]
    return [("p", f"Deletion and insertion curves (Petsiuk et al., 2018) on {curves.images} test images "
                  f"({curves.errors} misclassified), {curves.steps} steps: the probability of the predicted "
                  f"class as its pixels are deleted (filled with `{curves.deletion_fill}`) or inserted into a "
                  f"`{curves.insertion_canvas}` canvas, most salient first or in random order. Lower deletion "
                  "and higher insertion areas mean a more faithful ranking."),
            ("table", ["order", "deletion AUC", "deletion AUC (errors)", "insertion AUC", "insertion AUC (errors)"],
             rows),
            *versus_random_blocks(name, curves.versus_random),
            ("figure", figure_file("curves", name),
             f"{name}: deletion and insertion curves, per saliency method and random")]


def control_blocks(name: str, summary: ErasureSummary, curves: CurveSummary | None) -> list[Block]:
    """Every control block of one model, after its default-setting outcomes."""
    return runner_up_blocks(summary, summary.default_setting) + fill_blocks(summary.fills) + curve_blocks(name, curves)


def _similarity(s: MeanInterval) -> str:
    constant = f"; {s.undefined} constant" if s.undefined else ""
    return f"{_number(s.mean)} {_interval(s.ci95)}{constant}"


def _reference_text(name: str, check: ModelRandomisation) -> str:
    """Whether the model's maps have a seed-to-seed reference, and against which models."""
    if not check.reference_models:
        return (f"{name}: no seed-to-seed reference (no other trained seed of its architecture in a replicate group, "
                "`--replicates`), so how low a similarity counts as \"different\" is not calibrated.")
    return (f"{name}: the reference is the similarity of its trained maps to those of "
            f"{', '.join(check.reference_models)} (other seeds of its architecture) on the first "
            f"{check.reference_images} check images.")


def cascade_rows(name: str, check: ModelRandomisation) -> list[list]:
    """One row per method and cascade step (and the reference first, where there is one)."""
    rows = []
    for method, cascade in check.methods.items():
        if cascade.reference:
            rows.append([name, f"`{method}`", "reference: another trained seed"]
                        + [_similarity(cascade.reference[m]) for m in MEASURES] + ["", ""])
        for number, step in enumerate(cascade.steps, 1):
            below = ([_difference(step.below_reference[m]) for m in MEASURES] if step.below_reference
                     else ["-", "-"])
            rows.append([name, f"`{method}`", f"{number}: down to `{step.layer}`"]
                        + [_similarity(step.similarity[m]) for m in MEASURES] + below)
    return rows


def randomisation_blocks(summaries: dict[str, ModelRandomisation] | None) -> list[Block]:
    """The cascading model-randomisation section: per model, method and step the similarity to the trained maps
    with intervals, beside the seed-to-seed reference (none when no model ran the check)."""
    if not summaries:
        return []
    images = sorted({check.images for check in summaries.values()})
    seeds = sorted({check.seed for check in summaries.values()})
    rows = [row for name, check in summaries.items() for row in cascade_rows(name, check)]
    return [("h2", "Saliency sanity check: cascading model randomisation"),
            ("p", f"Cascading model-randomisation check (Adebayo et al., 2018) on {', '.join(map(str, images))} test "
                  "images per model: the layers are re-initialised from the logits down, one more at each step "
                  f"(PyTorch's default initialisation, seed {', '.join(map(str, seeds))}; batch-normalisation "
                  "statistics reset to mean 0 and variance 1), until all are random. At each step every image's "
                  "map of the trained model's predicted class is compared with the trained map: Spearman rank "
                  "correlation of the absolute maps and SSIM (Wang et al., 2004) of the maps scaled to [0, 1]; "
                  "mean with its 95% t interval, and how many images had a constant map (no score, counted). A "
                  "method that explains the model falls with the steps; a map that ignores the weights stays near "
                  "1. A step's maps differ from the trained ones only where they are less alike than the maps of "
                  "two trained seeds: the last two columns give the reference's similarity minus the step's on the "
                  "reference images, with its interval and the one-sided paired t test."),
            ("list", [_reference_text(name, check) for name, check in summaries.items()]),
            ("table", ["model", "method", "step (layers randomised)", "Spearman", "SSIM",
                       "reference - step, Spearman", "reference - step, SSIM"], rows),
            *[("figure", figure_file("randomisation", name),
               f"{name}: similarity to the trained maps as the layers are randomised from the top (95% intervals "
               "shaded; dotted: another trained seed)") for name in summaries]]
