"""The erasure study: erase boxes at the most salient pixels of the predicted class, classify again, compare.

For every image of a split and every (top_percent p, box b) setting, three erasures are classified:
- saliency: boxes anchored at the top p% pixels of the predicted class's saliency map;
- random (control a): the same number of anchors drawn uniformly at random (a uniform random map passed to the
  same erase op), the same boxes and fill;
- shifted (control c, `controls`): the saliency mask moved by a random offset, the same pixel count exactly.
At the default setting the erasures are also classified with every fill of the fill sweep (`fills`).
Misclassified images are then `corrected` (now the true class), `third_class` or `unchanged`; correctly
classified images are `broken` or not (control b). Only the saliency erasure correcting significantly more
errors than a control, on the same images (exact one-sided McNemar test), supports the claim that a
confusion comes from non-essential information; the runner-up counts (`runner_up`) say how many of those
corrections only hand the answer to the model's second choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from miscause import kernels
from miscause.erasure import ErasureSettings
from miscause.errors import MiscauseError
from miscause.grad_cam_layers import GRAD_CAM
from miscause.jobs.analysis import runner_up
from miscause.jobs.analysis.controls import SHIFTED, draw_offsets, shift_masks
from miscause.jobs.analysis.fills import FILLS, canvas, check_fill, fill_masked, fill_name
from miscause.jobs.analysis.predictions import Predictions, make_predictions
from miscause.jobs.analysis.repository_model import RepositoryModel
from miscause.jobs.analysis.significance import adjust, mcnemar_greater

SHIFT_STREAM = 1  # the shifted control's offsets come from their own random stream, beside the random maps'


# the curves' default methods: those every model can run (Grad-CAM needs a layer a model may not name; asked
# for explicitly, it needs one in every model)
CURVE_METHODS = tuple(method for method in kernels.METHODS if method != GRAD_CAM)


@dataclass(frozen=True, kw_only=True)
class ErasureOptions(ErasureSettings):
    """The study's erasure settings (`fill` may also name a fill of `fills`) and its sweeps, curves and batches;
    the default setting is always part of the sweep."""

    sweep_top_percent: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0)
    sweep_box: tuple[int, ...] = (1, 3, 5)
    batch_size: int = 256
    seed: int = 0
    sweep_fill: tuple[str, ...] = FILLS
    curve_methods: tuple[str, ...] = CURVE_METHODS
    curve_steps: int = 16
    curve_images: int = 256
    insertion_canvas: str = "blur"

    @property
    def default(self) -> tuple[float, int]:
        return (float(self.top_percent), int(self.box))

    def settings(self) -> list[tuple[float, int]]:
        """Every (top_percent, box) to run: the sweep grid plus the default, sorted."""
        grid = {(float(p), int(b)) for p in self.sweep_top_percent for b in self.sweep_box}
        return sorted(grid | {self.default})

    def extra_fills(self) -> list[str]:
        """The fills of the fill sweep other than the study's own, in sweep order."""
        return [f for f in dict.fromkeys(self.sweep_fill) if f != fill_name(self.fill)]

    def erasure_passes(self) -> int:
        """Classifications of an image's erasures: every anchor kind at every setting and every further fill."""
        return len(ANCHORS) * (len(self.settings()) + len(self.extra_fills()))

    def check(self, methods: Sequence[str] = kernels.METHODS) -> None:
        """A `MiscauseError` for a setting the erase op would refuse (every setting of the sweep checked)."""
        try:
            for p, b in self.settings():
                ErasureSettings(top_percent=p, box=b, saliency_method=self.saliency_method).check(methods)
        except ValueError as error:
            raise MiscauseError(str(error)) from None
        if self.batch_size < 1:
            raise MiscauseError(f"--batch-size must be at least 1, got {self.batch_size}")
        check_fill(self.fill)
        for name in (*self.sweep_fill, self.insertion_canvas):
            check_fill(name)
        unknown = [m for m in self.curve_methods if m not in kernels.METHODS]
        if unknown:
            raise MiscauseError(f"unknown curve method(s) {', '.join(unknown)}: choose among "
                                f"{', '.join(kernels.METHODS)}")
        if self.curve_steps < 1 or self.curve_images < 0:
            raise MiscauseError(f"curves need at least 1 step and 0 or more images, got {self.curve_steps} steps, "
                                f"{self.curve_images} images")


ANCHORS = ("saliency", "random", SHIFTED)


@dataclass
class SplitRun:
    """One model on one split: original logits, and every image's class and erased pixel count after each
    erasure setting ([settings, N] each, saliency and random anchors, and in `controls` further anchor kinds as
    (classes, pixels)).

    `positions` are the images' positions in the split; `error_rows` index the rows (of this run) that were
    misclassified, with their saliency maps in `error_maps` (empty when the run was read from a result file).
    `fill_predicted[fill][anchor]` [N] holds the classes after erasure with each fill of the fill sweep at
    `fill_setting` (empty when no fill sweep ran)."""

    model: str
    split: str
    classes: tuple[str, ...]
    positions: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    settings: list[tuple[float, int]]
    saliency_predicted: np.ndarray
    random_predicted: np.ndarray
    saliency_pixels: np.ndarray
    random_pixels: np.ndarray
    error_rows: np.ndarray
    error_maps: np.ndarray
    controls: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    fill_predicted: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    fill_setting: tuple[float, int] | None = None

    @property
    def predicted(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    @property
    def runner_up(self) -> np.ndarray:
        """Each image's second choice: the class of its second-largest logit."""
        return runner_up.runner_up(self.logits)

    @property
    def anchors(self) -> tuple[str, ...]:
        """The anchor kinds this run erased at: saliency, random, then the further controls."""
        return ("saliency", "random", *self.controls)

    def after(self, anchor: str) -> np.ndarray:
        """[settings, N] classes after erasure at `anchor`'s anchors."""
        return self.controls[anchor][0] if anchor in self.controls else getattr(self, f"{anchor}_predicted")

    def erased_pixels(self, anchor: str) -> np.ndarray:
        """[settings, N] pixels erased at `anchor`'s anchors."""
        return self.controls[anchor][1] if anchor in self.controls else getattr(self, f"{anchor}_pixels")

    @property
    def confidence(self) -> np.ndarray:
        """Maximum softmax probability per image."""
        shifted = self.logits - self.logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        return (probs / probs.sum(axis=1, keepdims=True)).max(axis=1)

    def predictions(self, source: str) -> Predictions:
        """The run's original predictions, for the pattern analysis."""
        return make_predictions(self.model, self.logits, self.labels, self.positions, self.classes, source)


def infer(model: RepositoryModel, images: np.ndarray, batch_size: int, device: torch.device, desc: str,
          progress: bool = True) -> np.ndarray:
    """Logits [N,K] of uint8 images [N,H,W,3], in batches with a progress bar."""
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", disable=not progress):
        out.append(model.logits(model.prepare(images[start:start + batch_size], device)).cpu().numpy())
    return np.concatenate(out)


def classify(model: RepositoryModel, x: torch.Tensor) -> np.ndarray:
    """The predicted class of each normalised image."""
    return model.logits(x).argmax(1).cpu().numpy()


def anchor_masks(x: torch.Tensor, saliency: torch.Tensor, uniform: torch.Tensor, offsets: torch.Tensor,
                 top_percent: float, box: int) -> dict[str, torch.Tensor]:
    """The erased pixels [N,H,W] of every anchor kind at one setting (the fill is applied by the caller)."""
    masks = {"saliency": kernels.erase(x, saliency, top_percent, box)[1],
             "random": kernels.erase(x, uniform, top_percent, box)[1]}
    masks[SHIFTED] = shift_masks(masks["saliency"], offsets)
    return masks


def run_split(model: RepositoryModel, images: np.ndarray, labels: np.ndarray, positions: np.ndarray,
              split: str, options: ErasureOptions, device: torch.device, progress: bool = True) -> SplitRun:
    """Classify and take the saliency of the predicted class (one forward and backward), erase under every
    setting (every anchor kind) and classify again; at the default setting also under every further fill.
    Saliency maps are kept for the misclassified images only (the examples)."""
    settings = options.settings()
    default = settings.index(options.default)
    generator = torch.Generator().manual_seed(options.seed)
    shift_rng = np.random.default_rng([options.seed, SHIFT_STREAM])
    main = fill_name(options.fill)
    fills = {main: options.fill, **{f: f for f in options.extra_fills()}}
    swept = list(fills) if options.sweep_fill else []
    logits, wrong_rows, maps = [], [], []
    after: dict[str, list] = {anchor: [] for anchor in ANCHORS}
    pixels: dict[str, list] = {anchor: [] for anchor in ANCHORS}
    filled: dict[str, dict[str, list]] = {f: {anchor: [] for anchor in ANCHORS} for f in swept}
    steps = range(0, len(images), options.batch_size)
    for start in tqdm(steps, desc=f"{model.name} {split}: saliency and erasure", unit="batch", disable=not progress):
        x = model.prepare(images[start:start + options.batch_size], device)
        saliency, batch_logits = kernels.saliency(model.module, x, method=options.saliency_method,
                                                  **model.config.saliency_options(options.saliency_method))
        predicted = batch_logits.argmax(1)
        uniform = torch.rand(saliency.shape, generator=generator).to(device)
        offsets = torch.from_numpy(draw_offsets(shift_rng, *saliency.shape)).to(device)
        canvases = {name: canvas(x, fill, model.mean, model.std) for name, fill in fills.items()}
        batch_after: dict[str, list] = {anchor: [] for anchor in ANCHORS}
        batch_pixels: dict[str, list] = {anchor: [] for anchor in ANCHORS}
        for index, (top_percent, box) in enumerate(settings):
            for anchor, mask in anchor_masks(x, saliency, uniform, offsets, top_percent, box).items():
                batch_after[anchor].append(classify(model, fill_masked(x, mask, canvases[main])))
                batch_pixels[anchor].append(mask.sum((1, 2)).cpu().numpy())
                for name in swept if index == default else ():
                    filled[name][anchor].append(batch_after[anchor][-1] if name == main else
                                                classify(model, fill_masked(x, mask, canvases[name])))
        batch_labels = torch.from_numpy(labels[start:start + options.batch_size]).to(device)
        wrong = (predicted != batch_labels).nonzero().squeeze(1)
        logits.append(batch_logits.cpu().numpy())
        for anchor in ANCHORS:
            after[anchor].append(np.stack(batch_after[anchor]))
            pixels[anchor].append(np.stack(batch_pixels[anchor]))
        wrong_rows.append(wrong.cpu().numpy() + start)
        maps.append(saliency[wrong].cpu().numpy())
    after = {anchor: np.concatenate(arrays, axis=1) for anchor, arrays in after.items()}
    pixels = {anchor: np.concatenate(arrays, axis=1) for anchor, arrays in pixels.items()}
    return SplitRun(model.name, split, model.classes, positions, labels, np.concatenate(logits), settings,
                    after["saliency"], after["random"], pixels["saliency"], pixels["random"],
                    error_rows=np.concatenate(wrong_rows), error_maps=np.concatenate(maps),
                    controls={SHIFTED: (after[SHIFTED], pixels[SHIFTED])},
                    fill_predicted={f: {a: np.concatenate(v) for a, v in by_anchor.items()}
                                    for f, by_anchor in filled.items()},
                    fill_setting=options.default if swept else None)


def outcomes(labels: np.ndarray, before: np.ndarray, after: np.ndarray) -> dict:
    """Counts of what an erasure did: to the errors (corrected, third class, unchanged) and to the correct."""
    wrong = before != labels
    n_errors, n_correct = int(wrong.sum()), int((~wrong).sum())
    corrected = int((wrong & (after == labels)).sum())
    unchanged = int((wrong & (after == before)).sum())
    broken = int((~wrong & (after != labels)).sum())
    return {"errors": n_errors, "corrected": corrected, "third_class": n_errors - corrected - unchanged,
            "unchanged": unchanged, "corrected_rate": corrected / n_errors if n_errors else 0.0,
            "correct": n_correct, "broken": broken, "broken_rate": broken / n_correct if n_correct else 0.0}


def paired_test(labels: np.ndarray, saliency_after: np.ndarray, random_after: np.ndarray) -> dict:
    """McNemar on the same images: corrected by saliency erasure only vs by the control's erasure only (the keys
    say `random_only` whichever control it is)."""
    saliency_fixed, random_fixed = saliency_after == labels, random_after == labels
    only_saliency = int((saliency_fixed & ~random_fixed).sum())
    only_random = int((random_fixed & ~saliency_fixed).sum())
    return {"saliency_only": only_saliency, "random_only": only_random,
            "p_value": mcnemar_greater(only_saliency, only_random)}


def test_key(control: str) -> str:
    """Where the paired test of saliency against `control` is kept: `test` for random anchors, else `test_NAME`."""
    return "test" if control == "random" else f"test_{control}"


def compared(labels: np.ndarray, before: np.ndarray, afters: dict[str, np.ndarray]) -> dict:
    """Each anchor kind's outcomes, and the paired test of saliency against every control on the errors."""
    wrong = before != labels
    result = {anchor: outcomes(labels, before, after) for anchor, after in afters.items()}
    for control in (a for a in afters if a != "saliency"):
        result[test_key(control)] = paired_test(labels[wrong], afters["saliency"][wrong], afters[control][wrong])
    return result


def setting_summary(run: SplitRun, index: int) -> dict:
    """One setting over the whole split: every anchor kind's outcomes and mean erased pixels per image, the
    paired tests on the errors, and each erasure against the runner-up."""
    top_percent, box = run.settings[index]
    predicted, second = run.predicted, run.runner_up
    afters = {anchor: run.after(anchor)[index] for anchor in run.anchors}
    summary = {"top_percent": top_percent, "box": box, **compared(run.labels, predicted, afters)}
    for anchor in run.anchors:
        summary[anchor]["mean_erased_pixels"] = float(run.erased_pixels(anchor)[index].mean())
    summary["runner_up"] = {anchor: runner_up.runner_up_outcomes(run.labels, predicted, second, after)
                            for anchor, after in afters.items()}
    return summary


def fill_summary(run: SplitRun) -> dict | None:
    """The fill sweep at its setting: per fill every anchor kind's outcomes and the paired tests; None without."""
    if not run.fill_predicted:
        return None
    top_percent, box = run.fill_setting
    return {"top_percent": top_percent, "box": box,
            "fills": [{"fill": name, **compared(run.labels, run.predicted, by_anchor)}
                      for name, by_anchor in run.fill_predicted.items()]}


def pair_summaries(run: SplitRun, index: int, candidates: np.ndarray, alpha: float,
                   correction: str, control: str = "random") -> list[dict]:
    """Per class pair with errors: the erasure outcomes, the paired tests and the runner-up counts; the
    candidates (the model's significant edges) are corrected for multiple testing among themselves and marked
    `verified` or not by the test against `control`."""
    predicted, labels, second = run.predicted, run.labels, run.runner_up
    records = []
    for i, j in sorted(set(zip(labels[predicted != labels].tolist(), predicted[predicted != labels].tolist(),
                               strict=True))):
        members = (labels == i) & (predicted == j)
        afters = {anchor: run.after(anchor)[index][members] for anchor in run.anchors}
        record = {"true": run.classes[i], "pred": run.classes[j], "errors": int(members.sum()),
                  **compared(labels[members], predicted[members], afters),
                  "runner_up_true": int((second[members] == i).sum()),
                  "saliency_to_runner_up": int((afters["saliency"] == second[members]).sum()),
                  "candidate": bool(candidates[i, j]), "p_adjusted": None, "verified": None}
        for anchor in run.anchors:
            for key in ("correct", "broken", "broken_rate", "errors"):
                record[anchor].pop(key)
        records.append(record)
    tested = [r for r in records if r["candidate"]]
    for record, p in zip(tested, adjust(np.array([r[test_key(control)]["p_value"] for r in tested]), correction),
                         strict=True):
        record["p_adjusted"] = float(p)
        record["verified"] = bool(p <= alpha)
    return records


def summarize(run: SplitRun, default: tuple[float, int], candidates: np.ndarray, alpha: float,
              correction: str, control: str = "random") -> dict:
    """The study's numbers for one model on one split (the `erasure` entry of metrics.json); pairs are verified
    against `control`, one of the run's control anchor kinds."""
    if control not in run.anchors[1:]:
        raise MiscauseError(f"{run.model}: no {control!r} control in these runs (they hold "
                            f"{', '.join(run.anchors[1:])})")
    index = run.settings.index(default)
    return {"split": run.split, "n": len(run.labels), "errors": int((run.predicted != run.labels).sum()),
            "default": {"top_percent": default[0], "box": default[1]}, "control": control,
            "runner_up_oracle": runner_up.oracle(run.labels, run.predicted, run.runner_up),
            "settings": [setting_summary(run, s) for s in range(len(run.settings))],
            "fills": fill_summary(run),
            "pairs": pair_summaries(run, index, candidates, alpha, correction, control)}


def verified_pairs(summary: dict) -> list[tuple[str, str]]:
    """(true, pred) pairs whose errors saliency erasure corrects significantly more than the control's erasure."""
    return [(r["true"], r["pred"]) for r in summary["pairs"] if r["verified"]]


def denormalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Normalised float [N,3,H,W] back to uint8 [N,H,W,3] for pictures."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x * s + m).clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def round_robin(keys: np.ndarray) -> np.ndarray:
    """An order of `keys`' positions that takes the first of every key, then the second of every key, ..."""
    order = np.argsort(keys, kind="stable")
    ranked = keys[order]
    starts = np.r_[0, np.flatnonzero(ranked[1:] != ranked[:-1]) + 1]
    occurrence = np.empty(len(keys), dtype=int)
    occurrence[order] = np.arange(len(keys)) - np.repeat(starts, np.diff(np.r_[starts, len(keys)]))
    return np.lexsort((np.arange(len(keys)), occurrence))


def examples(model: RepositoryModel, images: np.ndarray, run: SplitRun, options: ErasureOptions,
             count: int, device: torch.device) -> list[dict]:
    """Up to `count` misclassified images for the report, those the default erasure corrects first, spread
    over class pairs: the image, its saliency map, the erased image and the classes before and after."""
    index = run.settings.index(options.default)
    after = run.saliency_predicted[index][run.error_rows]
    fixed = after == run.labels[run.error_rows]
    pair = run.labels[run.error_rows] * len(run.classes) + run.predicted[run.error_rows]
    groups = [np.flatnonzero(fixed), np.flatnonzero(~fixed)]
    order = np.concatenate([g[round_robin(pair[g])] for g in groups])[:count]
    if len(order) == 0:
        return []
    rows = run.error_rows[order]
    x = model.prepare(images[rows], device)
    maps = torch.from_numpy(run.error_maps[order]).to(device)
    mask = kernels.erase(x, maps, options.top_percent, options.box)[1]
    pictures = denormalize(fill_masked(x, mask, canvas(x, options.fill, model.mean, model.std)), model.mean, model.std)
    return [{"position": int(run.positions[row]), "image": images[row], "saliency": run.error_maps[o],
             "erased": pictures[n], "mask": mask[n].cpu().numpy(), "true": run.classes[run.labels[row]],
             "before": run.classes[run.predicted[row]], "after": run.classes[after[o]]}
            for n, (o, row) in enumerate(zip(order, rows, strict=True))]


@dataclass
class ErasureResults:
    """The erasure study's outputs per model: test-split summary, policy document, example images."""

    summaries: dict[str, dict]
    policies: dict[str, dict] = field(default_factory=dict)
    examples: dict[str, list[dict]] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
