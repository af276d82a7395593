"""The erasure study: erase boxes at the most salient pixels of the predicted class, classify again, compare.

For every image of a split and every (top_percent p, box b) setting, these erasures are classified:
- saliency: boxes anchored at the top p% pixels of the predicted class's saliency map;
- random (control a): the same number of anchors drawn uniformly at random (a uniform random map passed to the
  same erase op), the same boxes and fill;
- matched (the location-matched control, `controls`): the saliency mask of another image with the same predicted
  class, one draw per setting (the same donor at every setting).
At the primary setting (the default p and b) both controls of `controls` take `control_draws` draws per image,
the location-matched one and `shifted` (the saliency mask at a non-zero offset that does not overlap it), kept as
per-image counts (`Draws`), with every mask's geometry; every fill of the fill sweep is classified there as well.
Every further saliency method of the sweep (`sweep_methods`) gets its own saliency and location-matched erasures
at every setting and fill (`MethodRun`). Misclassified images are then `corrected` (now the true class),
`third_class` or `unchanged`; correctly classified images are `broken` or not (control b). The endpoints
(`endpoints`) compare saliency with a control on the same images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from miscause import kernels
from miscause.erasure import ErasureSettings
from miscause.errors import MiscauseError
from miscause.grad_cam_layers import GRAD_CAM
from miscause.jobs.analysis.erasure import runner_up
from miscause.jobs.analysis.erasure.controls import (
    DRAWS,
    MATCHED,
    SHIFTED,
    check_shiftable,
    draw_donors,
    draw_offsets,
    geometry,
    shift_masks,
)
from miscause.jobs.analysis.erasure.fills import FILLS, canvas, check_fill, fill_masked, fill_name
from miscause.jobs.analysis.inputs.predictions import Predictions, make_predictions
from miscause.jobs.analysis.inputs.repository_model import RepositoryModel

SEED_STREAMS = {"shifted": 1, "matched": 2}  # the controls' own random streams, beside the random maps'


# the curves' default methods: those every model can run (Grad-CAM needs a layer a model may not name; asked
# for explicitly, it needs one in every model)
CURVE_METHODS = tuple(method for method in kernels.METHODS if method != GRAD_CAM)
SWEEP_METHODS = ("gradient", "integrated_gradients", GRAD_CAM)  # Grad-CAM where the model names a layer
IG_STEPS = 50  # the integrated gradients' default quadrature points: a saliency pass costs that many gradients


@dataclass(frozen=True, kw_only=True)
class ErasureOptions(ErasureSettings):
    """The study's erasure settings (`fill` may also name a fill of `fills`) and its sweeps, control draws, curves
    and batches; the default setting is always part of the sweep, the study's method always one of its methods."""

    sweep_top_percent: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0)
    sweep_box: tuple[int, ...] = (1, 3, 5)
    batch_size: int = 256
    seed: int = 0
    sweep_fill: tuple[str, ...] = FILLS
    sweep_methods: tuple[str, ...] = SWEEP_METHODS
    control_draws: int = DRAWS
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

    def methods(self, offers: Callable[[str], bool] = lambda method: True) -> list[str]:
        """The saliency methods to sweep, the study's own first, those a model `offers` (Grad-CAM needs a layer)."""
        wanted = dict.fromkeys((self.saliency_method, *self.sweep_methods))
        return [m for m in wanted if m == self.saliency_method or offers(m)]

    def erasure_passes(self) -> int:
        """Classifications of an image's erasures: the study's method's anchor kinds at every setting and every
        further fill, the controls' further draws at the primary setting, each further method's saliency and
        location-matched erasures at every setting and fill."""
        settings, fills = len(self.settings()), len(self.extra_fills())
        draws = (self.control_draws - 1) + self.control_draws
        return (len(ANCHORS) * (settings + fills) + draws
                + 2 * (len(self.methods()) - 1) * (settings + fills))

    def saliency_passes(self) -> int:
        """Gradient passes of an image's saliency maps, one per method (integrated gradients: one per step)."""
        return sum(IG_STEPS if m == "integrated_gradients" else 1 for m in self.methods())

    def check(self, methods: Sequence[str] = kernels.METHODS) -> None:
        """A `MiscauseError` for a setting the erase op would refuse (every setting of the sweep checked)."""
        try:
            for p, b in self.settings():
                ErasureSettings(top_percent=p, box=b, saliency_method=self.saliency_method).check(methods)
        except ValueError as error:
            raise MiscauseError(str(error)) from None
        if self.batch_size < 1:
            raise MiscauseError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.control_draws < 1:
            raise MiscauseError(f"--control-draws must be at least 1, got {self.control_draws}")
        check_fill(self.fill)
        for name in (*self.sweep_fill, self.insertion_canvas):
            check_fill(name)
        for option, chosen in (("curve", self.curve_methods), ("sweep", self.sweep_methods)):
            unknown = [m for m in chosen if m not in kernels.METHODS]
            if unknown:
                raise MiscauseError(f"unknown {option} method(s) {', '.join(unknown)}: choose among "
                                    f"{', '.join(kernels.METHODS)}")
        if self.curve_steps < 1 or self.curve_images < 0:
            raise MiscauseError(f"curves need at least 1 step and 0 or more images, got {self.curve_steps} steps, "
                                f"{self.curve_images} images")


ANCHORS = ("saliency", "random", MATCHED)  # the anchor kinds of every setting, in run order
DRAWN = (MATCHED, SHIFTED)  # the controls drawn several times per image at the primary setting


@dataclass(frozen=True, kw_only=True)
class Draws:
    """A control's draws at the primary setting, per image [N]: how many draws it has (`count`, 0 where the
    control does not exist for the image), how many gave the true class (`corrected`: for a correct answer, kept
    it) and how many changed the prediction (`changed`)."""

    count: np.ndarray
    corrected: np.ndarray
    changed: np.ndarray

    @classmethod
    def of_classes(cls, labels: np.ndarray, predicted: np.ndarray, after: np.ndarray,
                   valid: np.ndarray | None = None) -> Draws:
        """The counts of classes after erasure [draws, N] (or [N]: one draw) on the `valid` images (all)."""
        after = np.atleast_2d(after)
        valid = np.ones(after.shape[1], bool) if valid is None else valid
        return cls(count=np.where(valid, len(after), 0).astype(np.uint8),
                   corrected=np.where(valid, (after == labels).sum(0), 0).astype(np.uint8),
                   changed=np.where(valid, (after != predicted).sum(0), 0).astype(np.uint8))

    def rows(self, members: np.ndarray) -> Draws:
        """The draws of some images."""
        return Draws(count=self.count[members], corrected=self.corrected[members], changed=self.changed[members])

    @property
    def drawn(self) -> int:
        """Draws per image where the control exists."""
        return int(self.count.max(initial=0))


@dataclass(kw_only=True)
class MethodRun:
    """One saliency method's sweep: [settings, N] classes after erasure at its saliency and at the
    location-matched control (one draw), and at the primary setting per fill ({fill: {anchor: [N]}})."""

    saliency: np.ndarray
    matched: np.ndarray
    fills: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


@dataclass(kw_only=True)
class SplitRun:
    """One model on one split: original logits, and every image's class and erased pixel count after each
    erasure setting ([settings, N] each, saliency and random anchors, and in `controls` further anchor kinds as
    (classes, pixels)).

    `positions` are the images' positions in the split; `error_rows` index the rows (of this run) that were
    misclassified, with their saliency maps in `error_maps` (empty when the run was read from a result file).
    `fill_predicted[fill][anchor]` [N] holds the classes after erasure with each fill of the fill sweep at
    `fill_setting` (empty when no fill sweep ran). At the primary setting `draw_setting`, `draws[control]`
    counts the drawn controls' outcomes and `geometry[anchor]` [3, N] measures the masks (`controls.GEOMETRY`,
    means over draws); `methods` holds the further saliency methods' sweeps."""

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
    draws: dict[str, Draws] = field(default_factory=dict)
    draw_setting: tuple[float, int] | None = None
    geometry: dict[str, np.ndarray] = field(default_factory=dict)
    methods: dict[str, MethodRun] = field(default_factory=dict)

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

    def method_run(self, method: str, study_method: str) -> MethodRun:
        """The sweep of saliency `method`: the study's own (`study_method`) from the main arrays, else `methods`."""
        if method != study_method:
            return self.methods[method]
        return MethodRun(saliency=self.saliency_predicted, matched=self.after(MATCHED),
                         fills={f: {a: by[a] for a in ("saliency", MATCHED)} for f, by in self.fill_predicted.items()})

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


def saliency_maps(model: RepositoryModel, images: np.ndarray, methods: list[str], batch_size: int,
                  device: torch.device, desc: str, progress: bool) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    """Logits [N,K] and every method's saliency map of the predicted class [N,H,W] (kept on the CPU: the
    location-matched control erases at other images' maps)."""
    logits, maps = [], {method: [] for method in methods}
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", disable=not progress):
        x = model.prepare(images[start:start + batch_size], device)
        for method in methods:
            saliency, batch_logits = kernels.saliency(model.module, x, method=method,
                                                      **model.config.saliency_options(method))
            maps[method].append(saliency.float().cpu())
            if method == methods[0]:
                logits.append(batch_logits.float().cpu().numpy())
    return np.concatenate(logits), {method: torch.cat(parts) for method, parts in maps.items()}


def mask(x: torch.Tensor, ranking: torch.Tensor, setting: tuple[float, int]) -> torch.Tensor:
    """The erased pixels [N,H,W] of boxes around the top pixels of `ranking` (the fill is the caller's)."""
    return kernels.erase(x, ranking, *setting)[1]


class Collected(dict):
    """Per key, the batches' arrays, joined along the images' (last) axis at the end."""

    def add(self, key: tuple, value: torch.Tensor | np.ndarray) -> None:
        self.setdefault(key, []).append(value.cpu().numpy() if isinstance(value, torch.Tensor) else value)

    def joined(self, key: tuple) -> np.ndarray:
        return np.concatenate(self[key], axis=-1)


def run_split(model: RepositoryModel, images: np.ndarray, labels: np.ndarray, positions: np.ndarray,
              split: str, options: ErasureOptions, device: torch.device, progress: bool = True) -> SplitRun:
    """Every method's saliency of the predicted class (one pass over the split), then per batch the erasures:
    every setting of every anchor kind and method, every further fill and the controls' draws at the primary
    setting, each classified again. Saliency maps are kept for the misclassified images only (the examples)."""
    settings, default = options.settings(), options.default
    check_shiftable(*images.shape[1:3], default)
    methods = options.methods(model.config.offers)
    study = methods[0]
    logits, maps = saliency_maps(model, images, methods, options.batch_size, device,
                                 f"{model.name} {split}: saliency", progress)
    predicted = logits.argmax(1)
    draws = options.control_draws
    donors = torch.from_numpy(draw_donors(predicted, draws, np.random.default_rng([options.seed,
                                                                                   SEED_STREAMS[MATCHED]])))
    generator = torch.Generator().manual_seed(options.seed)
    shift_seed = int(np.random.SeedSequence([options.seed, SEED_STREAMS[SHIFTED]]).generate_state(1)[0])
    shift_generator = torch.Generator().manual_seed(shift_seed)
    main = fill_name(options.fill)
    fills = {main: options.fill, **{f: f for f in options.extra_fills()}}
    swept = list(fills) if options.sweep_fill else []
    out = Collected()
    for start in tqdm(range(0, len(images), options.batch_size), desc=f"{model.name} {split}: erasure",
                      unit="batch", disable=not progress):
        rows = slice(start, start + options.batch_size)
        x = model.prepare(images[rows], device)
        uniform = torch.rand(x.shape[:1] + x.shape[2:], generator=generator).to(device)
        canvases = {name: canvas(x, fill, model.mean, model.std) for name, fill in fills.items()}
        for method in methods:
            ranking = maps[method][rows].to(device)
            donor_maps = maps[method][donors[:1 if method != study else draws, rows]].to(device)
            by_setting: dict[str, list] = {}
            for setting in settings:
                masks = {"saliency": mask(x, ranking, setting), MATCHED: mask(x, donor_maps[0], setting)}
                if method == study:
                    masks["random"] = mask(x, uniform, setting)
                for anchor, erased in masks.items():
                    after = classify(model, fill_masked(x, erased, canvases[main]))
                    by_setting.setdefault(anchor, []).append(after)
                    if method == study:
                        by_setting.setdefault(f"{anchor}/pixels", []).append(erased.sum((1, 2)).cpu().numpy())
                    for name in swept if setting == default else ():
                        out.add((method, "fill", name, anchor), after if name == main else
                                classify(model, fill_masked(x, erased, canvases[name])))
                if method == study and setting == default:
                    primary_draws(model, x, setting, masks, by_setting[MATCHED][-1], donor_maps, shift_generator,
                                  canvases[main], out)
            for key, values in by_setting.items():
                out.add((method, key), np.stack(values))
    return split_run(model, split, positions, labels, logits, (settings, default), maps[study], methods, swept, out)


def primary_draws(model: RepositoryModel, x: torch.Tensor, setting: tuple[float, int], masks: dict[str, torch.Tensor],
                  matched_after: np.ndarray, donor_maps: torch.Tensor, generator: torch.Generator,
                  fill_canvas: torch.Tensor, out: Collected) -> None:
    """At the primary setting: the controls' draws (location-matched: the donors' masks, the first one classified
    already as `matched_after`; shifted: the saliency mask at admissible offsets), classified, and every mask's
    geometry."""
    offsets, valid = draw_offsets(masks["saliency"], len(donor_maps), generator)
    out.add(("valid", SHIFTED), valid)
    drawn = {MATCHED: [masks[MATCHED]] + [mask(x, donor, setting) for donor in donor_maps[1:]],
             SHIFTED: [shift_masks(masks["saliency"], offset) for offset in offsets]}
    for control, control_masks in drawn.items():
        first = [matched_after] if control == MATCHED else []
        out.add(("draws", control), np.stack(first + [classify(model, fill_masked(x, m, fill_canvas))
                                                      for m in control_masks[len(first):]]))
        shape = torch.stack([geometry(m, masks["saliency"]) for m in control_masks]).mean(0)
        out.add(("geometry", control), shape if control == MATCHED else shape.where(valid.to(shape.device), torch.nan))
    for anchor in ("saliency", "random"):
        out.add(("geometry", anchor), geometry(masks[anchor], masks["saliency"]))


def split_run(model: RepositoryModel, split: str, positions: np.ndarray, labels: np.ndarray, logits: np.ndarray,
              grid: tuple[list[tuple[float, int]], tuple[float, int]], study_maps: torch.Tensor, methods: list[str],
              swept: list[str], out: Collected) -> SplitRun:
    """The batches' arrays joined into the split's run; `grid`: the settings and the primary one."""
    (settings, default), study, predicted = grid, methods[0], logits.argmax(1)
    shiftable = out.joined(("valid", SHIFTED))
    wrong = np.flatnonzero(predicted != labels)
    filled = {name: {anchor: out.joined((study, "fill", name, anchor)) for anchor in ANCHORS} for name in swept}
    return SplitRun(
        model=model.name, split=split, classes=model.classes, positions=positions, labels=labels, logits=logits,
        settings=settings, saliency_predicted=out.joined((study, "saliency")),
        random_predicted=out.joined((study, "random")), saliency_pixels=out.joined((study, "saliency/pixels")),
        random_pixels=out.joined((study, "random/pixels")), error_rows=wrong,
        error_maps=study_maps[torch.from_numpy(wrong)].numpy(),
        controls={MATCHED: (out.joined((study, MATCHED)), out.joined((study, f"{MATCHED}/pixels")))},
        fill_predicted=filled, fill_setting=default if swept else None,
        draws={control: Draws.of_classes(labels, predicted, out.joined(("draws", control)),
                                         shiftable if control == SHIFTED else None) for control in DRAWN},
        draw_setting=default,
        geometry={anchor: out.joined(("geometry", anchor)).astype(np.float32) for anchor in (*ANCHORS, SHIFTED)},
        methods={m: MethodRun(saliency=out.joined((m, "saliency")), matched=out.joined((m, MATCHED)),
                              fills={name: {a: out.joined((m, "fill", name, a)) for a in ("saliency", MATCHED)}
                                     for name in swept})
                 for m in methods[1:]})
