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
from miscause.jobs.analysis.erasure import runner_up
from miscause.jobs.analysis.erasure.controls import SHIFTED, draw_offsets, shift_masks
from miscause.jobs.analysis.erasure.fills import FILLS, canvas, check_fill, fill_masked, fill_name
from miscause.jobs.analysis.inputs.predictions import Predictions, make_predictions
from miscause.jobs.analysis.inputs.repository_model import RepositoryModel

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


@dataclass(kw_only=True)
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
    return SplitRun(model=model.name, split=split, classes=model.classes, positions=positions, labels=labels,
                    logits=np.concatenate(logits), settings=settings, saliency_predicted=after["saliency"],
                    random_predicted=after["random"], saliency_pixels=pixels["saliency"],
                    random_pixels=pixels["random"], error_rows=np.concatenate(wrong_rows),
                    error_maps=np.concatenate(maps),
                    controls={SHIFTED: (after[SHIFTED], pixels[SHIFTED])},
                    fill_predicted={f: {a: np.concatenate(v) for a, v in by_anchor.items()}
                                    for f, by_anchor in filled.items()},
                    fill_setting=options.default if swept else None)
