"""What the erasure did, counted: per setting, per fill and per class pair, every anchor kind's outcomes on the
errors (corrected, third class, unchanged) and on the correct answers (broken), the paired tests of saliency
against each control (exact one-sided McNemar on the same images) and the runner-up counts; a pair is verified
where saliency erasure corrects its errors more than the chosen control does (a one-sided sign-flip permutation
test of the paired differences, the control's draws averaged per image) after correction over the model's
significant edges. And per model the endpoints (`endpoints`): the primary one with its verdict, the secondary
controls, the controls' geometry and every cell of the sweep. All as frozen records (`ErasureSummary`,
`Endpoints`) that the report renders; `report.metrics` lays them out as metrics.json."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from miscause.errors import MiscauseError
from miscause.jobs.analysis.erasure.controls import GEOMETRY, MATCHED, SHIFTED
from miscause.jobs.analysis.erasure.endpoints import Endpoint, endpoint, verdict
from miscause.jobs.analysis.erasure.fills import fill_name
from miscause.jobs.analysis.erasure.paired import MeanDifference
from miscause.jobs.analysis.erasure.run import ANCHORS, Draws, SplitRun
from miscause.jobs.analysis.erasure.runner_up import Oracle, RunnerUpOutcomes, oracle, runner_up_outcomes
from miscause.jobs.analysis.patterns.significance import adjust, mcnemar_greater

PRIMARY_CONTROL = MATCHED  # the pre-registered control (docs/analysis.md)
CONTROLS = (MATCHED, SHIFTED, "random")  # the controls a pair may be verified against
RESAMPLES = 9999  # sign flips of the pair verification where exact enumeration is too long


@dataclass(frozen=True, kw_only=True)
class Outcomes:
    """What one erasure did: to the errors (corrected, third class, unchanged) and to the correct answers
    (broken)."""

    errors: int
    corrected: int
    third_class: int
    unchanged: int
    corrected_rate: float
    correct: int
    broken: int
    broken_rate: float


@dataclass(frozen=True, kw_only=True)
class PairedTest:
    """The exact one-sided McNemar test on the same errors: corrected by saliency erasure only against by the
    control's erasure only."""

    saliency_only: int
    control_only: int
    p_value: float


@dataclass(frozen=True, kw_only=True)
class Compared:
    """Each anchor kind's outcomes on the same images (saliency first) and, per control, the paired test of
    saliency against it on the errors."""

    outcomes: dict[str, Outcomes]
    tests: dict[str, PairedTest]

    @property
    def anchors(self) -> list[str]:
        """The anchor kinds compared, saliency first."""
        return [a for a in ANCHORS if a in self.outcomes]


@dataclass(frozen=True, kw_only=True)
class Setting:
    """One setting (p, b) over the whole split: every anchor kind's outcomes and the paired tests, the mean
    pixels each erased per image, and each erasure against the runner-up."""

    top_percent: float
    box: int
    compared: Compared
    erased_pixels: dict[str, float]
    runner_up: dict[str, RunnerUpOutcomes]


@dataclass(frozen=True, kw_only=True)
class FillOutcome:
    """One fill of the fill sweep: every anchor kind's outcomes and the paired tests."""

    fill: str
    compared: Compared


@dataclass(frozen=True, kw_only=True)
class FillSweep:
    """The fill sweep at its one setting (p, b)."""

    top_percent: float
    box: int
    fills: tuple[FillOutcome, ...]


@dataclass(frozen=True, kw_only=True)
class Verification:
    """A pair's errors that have the control: corrected by saliency erasure, by the control (the mean over its
    `draws`, summed), the mean paired difference (None without errors) and its one-sided sign-flip p-value."""

    draws: int
    errors: int
    saliency_corrected: int
    control_corrected: float
    difference: float | None
    p_value: float


@dataclass(frozen=True, kw_only=True)
class PairSummary:
    """One class pair's errors at the default setting: the anchor kinds' outcomes and paired tests, how many have
    the true class as runner-up and how many saliency erasure sent to the runner-up; for a `candidate` (a
    significant edge) the verification against the study's control, its adjusted p-value and whether it is
    `verified` (None for the others)."""

    true: str
    pred: str
    errors: int
    compared: Compared
    runner_up_true: int
    saliency_to_runner_up: int
    candidate: bool
    verification: Verification | None = None
    p_adjusted: float | None = None
    verified: bool | None = None


@dataclass(frozen=True, kw_only=True)
class ErasureSummary:
    """One model's erasure study on one split: its images and errors, the default setting, the control pairs are
    verified against, the runner-up oracle, every setting of the sweep, the fill sweep (None without one) and the
    class pairs."""

    split: str
    n: int
    errors: int
    default: tuple[float, int]
    control: str
    runner_up_oracle: Oracle
    settings: tuple[Setting, ...]
    fills: FillSweep | None
    pairs: tuple[PairSummary, ...]

    @property
    def default_setting(self) -> Setting:
        """The setting at the default (p, b)."""
        return next(s for s in self.settings if (s.top_percent, s.box) == self.default)

    @property
    def verified_pairs(self) -> list[tuple[str, str]]:
        """(true, pred) pairs whose errors saliency erasure corrects significantly more than the control's."""
        return [(r.true, r.pred) for r in self.pairs if r.verified]


def outcomes(labels: np.ndarray, before: np.ndarray, after: np.ndarray) -> Outcomes:
    """Counts of what an erasure did: to the errors (corrected, third class, unchanged) and to the correct."""
    wrong = before != labels
    n_errors, n_correct = int(wrong.sum()), int((~wrong).sum())
    corrected = int((wrong & (after == labels)).sum())
    unchanged = int((wrong & (after == before)).sum())
    broken = int((~wrong & (after != labels)).sum())
    return Outcomes(errors=n_errors, corrected=corrected, third_class=n_errors - corrected - unchanged,
                    unchanged=unchanged, corrected_rate=corrected / n_errors if n_errors else 0.0,
                    correct=n_correct, broken=broken, broken_rate=broken / n_correct if n_correct else 0.0)


def paired_test(labels: np.ndarray, saliency_after: np.ndarray, control_after: np.ndarray) -> PairedTest:
    """McNemar on the same images: corrected by saliency erasure only vs by the control's erasure only."""
    saliency_fixed, control_fixed = saliency_after == labels, control_after == labels
    only_saliency = int((saliency_fixed & ~control_fixed).sum())
    only_control = int((control_fixed & ~saliency_fixed).sum())
    return PairedTest(saliency_only=only_saliency, control_only=only_control,
                      p_value=mcnemar_greater(only_saliency, only_control))


def compared(labels: np.ndarray, before: np.ndarray, afters: dict[str, np.ndarray]) -> Compared:
    """Each anchor kind's outcomes, and the paired test of saliency against every control on the errors."""
    wrong = before != labels
    return Compared(outcomes={anchor: outcomes(labels, before, after) for anchor, after in afters.items()},
                    tests={control: paired_test(labels[wrong], afters["saliency"][wrong], afters[control][wrong])
                           for control in afters if control != "saliency"})


def setting_summary(run: SplitRun, index: int) -> Setting:
    """One setting over the whole split: every anchor kind's outcomes and mean erased pixels per image, the
    paired tests on the errors, and each erasure against the runner-up."""
    top_percent, box = run.settings[index]
    predicted, second = run.predicted, run.runner_up
    afters = {anchor: run.after(anchor)[index] for anchor in run.anchors}
    return Setting(top_percent=top_percent, box=box, compared=compared(run.labels, predicted, afters),
                   erased_pixels={anchor: float(run.erased_pixels(anchor)[index].mean()) for anchor in run.anchors},
                   runner_up={anchor: runner_up_outcomes(run.labels, predicted, second, after)
                              for anchor, after in afters.items()})


def fill_summary(run: SplitRun) -> FillSweep | None:
    """The fill sweep at its setting: per fill every anchor kind's outcomes and the paired tests; None without."""
    if not run.fill_predicted:
        return None
    top_percent, box = run.fill_setting
    return FillSweep(top_percent=top_percent, box=box,
                     fills=tuple(FillOutcome(fill=name, compared=compared(run.labels, run.predicted, by_anchor))
                                 for name, by_anchor in run.fill_predicted.items()))


def control_draws(run: SplitRun, control: str, index: int) -> Draws:
    """The control's outcomes per image at setting `index`: its draws where the run drew it (the primary setting),
    else its one erasure."""
    if control in run.draws and run.settings[index] == run.draw_setting:
        return run.draws[control]
    if control not in run.anchors[1:]:
        raise MiscauseError(f"{run.model}: no {control!r} control in these runs (they hold "
                            f"{', '.join((*run.anchors[1:], *run.draws))})")
    return Draws.of_classes(run.labels, run.predicted, run.after(control)[index])


def sign_flip_p(differences: np.ndarray, seed: int) -> float:
    """One-sided p-value that paired differences have a positive mean: the sign-flip permutation test (scipy;
    exact where 2^n flips are fewer than `RESAMPLES`)."""
    if not np.any(differences):  # none, or all zero: no evidence of a difference
        return 1.0
    return float(stats.permutation_test((differences,), lambda d, axis: d.mean(axis=axis), vectorized=True,
                                        permutation_type="samples", alternative="greater", n_resamples=RESAMPLES,
                                        rng=np.random.default_rng(seed)).pvalue)


def verification(labels: np.ndarray, saliency_after: np.ndarray, control: Draws, seed: int) -> Verification:
    """A pair's errors: corrected by saliency erasure, by the control (the mean over its draws, summed), the mean
    paired difference and its one-sided sign-flip p-value."""
    has = control.count > 0
    fixed = saliency_after[has] == labels[has]
    differences = fixed - control.corrected[has] / control.count[has]
    return Verification(draws=control.drawn, errors=int(has.sum()), saliency_corrected=int(fixed.sum()),
                        control_corrected=float((control.corrected[has] / control.count[has]).sum()),
                        difference=float(differences.mean()) if has.any() else None,
                        p_value=sign_flip_p(differences, seed))


def pair_summaries(run: SplitRun, index: int, candidates: np.ndarray, alpha: float,
                   correction: str, control: str = PRIMARY_CONTROL, seed: int = 0) -> list[PairSummary]:
    """Per class pair with errors: the erasure outcomes, the paired tests and the runner-up counts; the
    candidates (the model's significant edges) are tested against `control` (`verification`), corrected for
    multiple testing among themselves and marked `verified` or not."""
    predicted, labels, second = run.predicted, run.labels, run.runner_up
    against = control_draws(run, control, index)
    records = []
    for i, j in sorted(set(zip(labels[predicted != labels].tolist(), predicted[predicted != labels].tolist(),
                               strict=True))):
        members = (labels == i) & (predicted == j)
        afters = {anchor: run.after(anchor)[index][members] for anchor in run.anchors}
        candidate = bool(candidates[i, j])
        records.append(PairSummary(
            true=run.classes[i], pred=run.classes[j], errors=int(members.sum()),
            compared=compared(labels[members], predicted[members], afters),
            runner_up_true=int((second[members] == i).sum()),
            saliency_to_runner_up=int((afters["saliency"] == second[members]).sum()), candidate=candidate,
            verification=verification(labels[members], afters["saliency"], against.rows(members), seed)
            if candidate else None))
    tested = [n for n, r in enumerate(records) if r.candidate]
    adjusted = adjust(np.array([records[n].verification.p_value for n in tested]), correction)
    for n, p in zip(tested, adjusted, strict=True):
        records[n] = replace(records[n], p_adjusted=float(p), verified=bool(p <= alpha))
    return records


def summarize(run: SplitRun, default: tuple[float, int], candidates: np.ndarray, alpha: float,
              correction: str, control: str = PRIMARY_CONTROL, seed: int = 0) -> ErasureSummary:
    """The study's numbers for one model on one split (the `erasure` entry of metrics.json); pairs are verified
    against `control`, one of `CONTROLS` the run holds."""
    index = run.settings.index(default)
    return ErasureSummary(split=run.split, n=len(run.labels), errors=int((run.predicted != run.labels).sum()),
                          default=(default[0], default[1]), control=control,
                          runner_up_oracle=oracle(run.labels, run.predicted, run.runner_up),
                          settings=tuple(setting_summary(run, s) for s in range(len(run.settings))),
                          fills=fill_summary(run),
                          pairs=tuple(pair_summaries(run, index, candidates, alpha, correction, control, seed)))


@dataclass(frozen=True, kw_only=True)
class Geometry:
    """One anchor kind's masks at the primary setting, over the `images` that have it: the mean pixel count, the
    mean share in the central half of each side, the mean and the largest share inside the saliency mask (None
    without images)."""

    anchor: str
    images: int
    pixels: float | None
    central_share: float | None
    saliency_overlap: float | None
    max_saliency_overlap: float | None


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One cell of the sweep: saliency `method` at (p, b) with `fill`, against the location-matched control
    (one draw)."""

    method: str
    top_percent: float
    box: int
    fill: str
    correction: MeanDifference
    specificity: MeanDifference


@dataclass(frozen=True, kw_only=True)
class Endpoints:
    """One model's endpoints on the test split: the primary one (against the location-matched control at the
    primary setting) and its verdict, the secondary controls, the masks' geometry and the sweep's cells."""

    method: str
    top_percent: float
    box: int
    fill: str
    primary: Endpoint
    verdict: str
    secondary: tuple[Endpoint, ...]
    geometry: tuple[Geometry, ...]
    sweep: tuple[Cell, ...]


def geometry_summary(anchor: str, values: np.ndarray) -> Geometry:
    """The means of one anchor kind's per-image geometry [3, N]."""
    present = values[:, np.isfinite(values).all(0)].astype(np.float64)
    rows = dict(zip(GEOMETRY, present, strict=True))
    means = {key: float(row.mean()) if row.size else None for key, row in rows.items()}
    return Geometry(anchor=anchor, images=present.shape[1], **means,
                    max_saliency_overlap=float(rows["saliency_overlap"].max()) if present.size else None)


def sweep_cells(run: SplitRun, study_method: str, fill: str) -> list[Cell]:
    """Every method's every setting with the study's fill, then every further fill at the primary setting."""
    labels, predicted, cells = run.labels, run.predicted, []
    for method in (study_method, *run.methods):
        sweep = run.method_run(method, study_method)
        outcomes = [(p, b, fill, sweep.saliency[s], sweep.matched[s]) for s, (p, b) in enumerate(run.settings)]
        outcomes += [(*run.fill_setting, name, by["saliency"], by[MATCHED])
                     for name, by in sweep.fills.items() if name != fill]
        for p, b, name, saliency_after, matched_after in outcomes:
            result = endpoint(labels, predicted, saliency_after, Draws.of_classes(labels, predicted, matched_after),
                              MATCHED)
            cells.append(Cell(method=method, top_percent=p, box=b, fill=name, correction=result.correction,
                              specificity=result.specificity))
    return cells


def endpoints(run: SplitRun, default: tuple[float, int], method: str, fill: object) -> Endpoints:
    """The model's endpoints at the primary setting `default` (`PRIMARY_CONTROL` first) and the sweep."""
    index = run.settings.index(default)
    after = run.saliency_predicted[index]
    results = [endpoint(run.labels, run.predicted, after, control_draws(run, control, index), control)
               for control in CONTROLS]
    return Endpoints(method=method, top_percent=default[0], box=default[1], fill=fill_name(fill),
                     primary=results[0], verdict=verdict(results[0]), secondary=tuple(results[1:]),
                     geometry=tuple(geometry_summary(anchor, values) for anchor, values in run.geometry.items()),
                     sweep=tuple(sweep_cells(run, method, fill_name(fill))))
