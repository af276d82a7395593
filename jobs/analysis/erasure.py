"""The erasure study: erase boxes at the most salient pixels of the predicted class, classify again, compare.

For every image of a split and every (top_percent p, box b) setting, two erasures are classified:
- saliency: boxes anchored at the top p% pixels of the predicted class's saliency map;
- random (control a): the same number of anchors drawn uniformly at random (a uniform random map passed to the
  same erase op), the same boxes and fill.
Misclassified images are then `corrected` (now the true class), `third_class` or `unchanged`; correctly
classified images are `broken` or not (control b). Only the saliency erasure correcting significantly more
errors than the random one, on the same images (exact one-sided McNemar test), supports the claim that a
confusion comes from non-essential information.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from miscause import kernels
from miscause.defaults import BOX, SALIENCY_METHOD, TOP_PERCENT
from miscause.errors import MiscauseError
from miscause.jobs.analysis.predictions import Predictions, make_predictions
from miscause.jobs.analysis.repository_model import RepositoryModel
from miscause.jobs.analysis.significance import adjust, mcnemar_greater


@dataclass(frozen=True)
class ErasureOptions:
    """Settings of the study; the default setting is always part of the sweep."""

    top_percent: float = TOP_PERCENT
    box: int = BOX
    sweep_top_percent: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0)
    sweep_box: tuple[int, ...] = (1, 3, 5)
    fill: tuple[float, ...] | None = None
    saliency_method: str = SALIENCY_METHOD
    batch_size: int = 256
    seed: int = 0

    @property
    def default(self) -> tuple[float, int]:
        return (float(self.top_percent), int(self.box))

    def settings(self) -> list[tuple[float, int]]:
        """Every (top_percent, box) to run: the sweep grid plus the default, sorted."""
        grid = {(float(p), int(b)) for p in self.sweep_top_percent for b in self.sweep_box}
        return sorted(grid | {self.default})

    def check(self) -> None:
        """A `MiscauseError` for a setting the erase op would refuse."""
        for p, b in self.settings():
            if not 0 < p <= 100:
                raise MiscauseError(f"top percent must lie in (0, 100], got {p}")
            if b < 1 or b % 2 == 0:
                raise MiscauseError(f"box must be an odd size >= 1, got {b}")
        if self.saliency_method not in kernels.METHODS:
            raise MiscauseError(f"unknown saliency method {self.saliency_method!r}: choose one of "
                                f"{', '.join(kernels.METHODS)}")
        if self.batch_size < 1:
            raise MiscauseError(f"--batch-size must be at least 1, got {self.batch_size}")


@dataclass
class SplitRun:
    """One model on one split: original logits, and every image's class and erased pixel count after each
    erasure setting ([settings, N] each, saliency and random anchors).

    `positions` are the images' positions in the split; `error_rows` index the rows (of this run) that were
    misclassified, with their saliency maps in `error_maps` (empty when the run was read from a result file)."""

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

    @property
    def predicted(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        """Maximum softmax probability per image."""
        shifted = self.logits - self.logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        return (probs / probs.sum(axis=1, keepdims=True)).max(axis=1)

    def predictions(self, source: str) -> Predictions:
        """The run's original predictions, for the pattern analysis."""
        return make_predictions(self.model, self.logits, self.labels, self.positions, self.classes, source)


def _fill(options: ErasureOptions, device: torch.device) -> torch.Tensor | None:
    return None if options.fill is None else torch.tensor(options.fill, dtype=torch.float32, device=device)


def infer(model: RepositoryModel, images: np.ndarray, batch_size: int, device: torch.device, desc: str,
          progress: bool = True) -> np.ndarray:
    """Logits [N,K] of uint8 images [N,H,W,3], in batches with a progress bar."""
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", disable=not progress):
        out.append(model.logits(model.prepare(images[start:start + batch_size], device)).cpu().numpy())
    return np.concatenate(out)


def run_split(model: RepositoryModel, images: np.ndarray, labels: np.ndarray, positions: np.ndarray,
              split: str, options: ErasureOptions, device: torch.device, progress: bool = True) -> SplitRun:
    """Classify and take the saliency of the predicted class (one forward and backward), erase under every
    setting (saliency and random anchors) and classify again. Saliency maps are kept for the misclassified
    images only (the examples)."""
    settings = options.settings()
    generator = torch.Generator().manual_seed(options.seed)
    fill = _fill(options, device)
    logits, wrong_rows, maps = [], [], []
    erasures: dict[str, list] = {key: [] for key in ("saliency_predicted", "random_predicted", "saliency_pixels",
                                                    "random_pixels")}
    steps = range(0, len(images), options.batch_size)
    for start in tqdm(steps, desc=f"{model.name} {split}: saliency and erasure", unit="batch", disable=not progress):
        x = model.prepare(images[start:start + options.batch_size], device)
        saliency, batch_logits = kernels.saliency(model.module, x, method=options.saliency_method,
                                                  **model.config.saliency_options(options.saliency_method))
        predicted = batch_logits.argmax(1)
        uniform = torch.rand(saliency.shape, generator=generator).to(device)
        batch: dict[str, list] = {key: [] for key in erasures}
        for top_percent, box in settings:
            for anchors, kind in ((saliency, "saliency"), (uniform, "random")):
                erased, mask = kernels.erase(x, anchors, top_percent, box, fill)
                batch[f"{kind}_predicted"].append(model.logits(erased).argmax(1).cpu().numpy())
                batch[f"{kind}_pixels"].append(mask.sum((1, 2)).cpu().numpy())
        batch_labels = torch.from_numpy(labels[start:start + options.batch_size]).to(device)
        wrong = (predicted != batch_labels).nonzero().squeeze(1)
        logits.append(batch_logits.cpu().numpy())
        for key, arrays in batch.items():
            erasures[key].append(np.stack(arrays))
        wrong_rows.append(wrong.cpu().numpy() + start)
        maps.append(saliency[wrong].cpu().numpy())
    return SplitRun(model.name, split, model.classes, positions, labels, np.concatenate(logits), settings,
                    **{key: np.concatenate(arrays, axis=1) for key, arrays in erasures.items()},
                    error_rows=np.concatenate(wrong_rows), error_maps=np.concatenate(maps))


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
    """McNemar on the same images: corrected by saliency erasure only vs by random erasure only."""
    saliency_fixed, random_fixed = saliency_after == labels, random_after == labels
    only_saliency = int((saliency_fixed & ~random_fixed).sum())
    only_random = int((random_fixed & ~saliency_fixed).sum())
    return {"saliency_only": only_saliency, "random_only": only_random,
            "p_value": mcnemar_greater(only_saliency, only_random)}


def setting_summary(run: SplitRun, index: int) -> dict:
    """One setting over the whole split: both erasures' outcomes and mean erased pixels per image, and the
    paired test on the errors."""
    top_percent, box = run.settings[index]
    predicted, wrong = run.predicted, run.predicted != run.labels
    return {"top_percent": top_percent, "box": box,
            "saliency": {**outcomes(run.labels, predicted, run.saliency_predicted[index]),
                         "mean_erased_pixels": float(run.saliency_pixels[index].mean())},
            "random": {**outcomes(run.labels, predicted, run.random_predicted[index]),
                       "mean_erased_pixels": float(run.random_pixels[index].mean())},
            "test": paired_test(run.labels[wrong], run.saliency_predicted[index][wrong],
                                run.random_predicted[index][wrong])}


def pair_summaries(run: SplitRun, index: int, candidates: np.ndarray, alpha: float,
                   correction: str) -> list[dict]:
    """Per class pair with errors: the erasure outcomes and the paired test; the candidates (the model's
    significant edges) are corrected for multiple testing among themselves and marked `verified` or not."""
    predicted, labels = run.predicted, run.labels
    records = []
    for i, j in sorted(set(zip(labels[predicted != labels].tolist(), predicted[predicted != labels].tolist(),
                               strict=True))):
        members = (labels == i) & (predicted == j)
        saliency_after = run.saliency_predicted[index][members]
        random_after = run.random_predicted[index][members]
        record = {"true": run.classes[i], "pred": run.classes[j], "errors": int(members.sum()),
                  "saliency": outcomes(labels[members], predicted[members], saliency_after),
                  "random": outcomes(labels[members], predicted[members], random_after),
                  "test": paired_test(labels[members], saliency_after, random_after),
                  "candidate": bool(candidates[i, j]), "p_adjusted": None, "verified": None}
        for key in ("correct", "broken", "broken_rate", "errors"):
            record["saliency"].pop(key)
            record["random"].pop(key)
        records.append(record)
    tested = [r for r in records if r["candidate"]]
    for record, p in zip(tested, adjust(np.array([r["test"]["p_value"] for r in tested]), correction),
                         strict=True):
        record["p_adjusted"] = float(p)
        record["verified"] = bool(p <= alpha)
    return records


def summarize(run: SplitRun, default: tuple[float, int], candidates: np.ndarray, alpha: float,
              correction: str) -> dict:
    """The study's numbers for one model on one split (the `erasure` entry of metrics.json)."""
    index = run.settings.index(default)
    return {"split": run.split, "n": len(run.labels), "errors": int((run.predicted != run.labels).sum()),
            "default": {"top_percent": default[0], "box": default[1]},
            "settings": [setting_summary(run, s) for s in range(len(run.settings))],
            "pairs": pair_summaries(run, index, candidates, alpha, correction)}


def verified_pairs(summary: dict) -> list[tuple[str, str]]:
    """(true, pred) pairs whose errors saliency erasure corrects significantly more than random erasure."""
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
    erased, mask = kernels.erase(x, maps, options.top_percent, options.box, _fill(options, device))
    pictures = denormalize(erased, model.mean, model.std)
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
