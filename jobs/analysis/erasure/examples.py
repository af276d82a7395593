"""The report's example images: misclassified test images, those the default erasure corrects first, spread
over class pairs, with their saliency maps and erased images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from miscause import kernels
from miscause.jobs.analysis.erasure.fills import canvas, fill_masked
from miscause.jobs.analysis.erasure.run import ErasureOptions, SplitRun
from miscause.jobs.analysis.inputs.repository_model import RepositoryModel


@dataclass(frozen=True, kw_only=True)
class Example:
    """One misclassified test image for the report: its position in the split, the image (uint8 [H,W,3]), the
    saliency map of the predicted class, the erased image and its mask, and the classes: true, predicted, after
    erasure."""

    position: int
    image: np.ndarray
    saliency: np.ndarray
    erased: np.ndarray
    mask: np.ndarray
    true: str
    before: str
    after: str

    @classmethod
    def of(cls, run: SplitRun, row: int, after: int, **pictures: np.ndarray) -> Example:
        """The example of the run's `row`, whose erased image the model classified as `after`."""
        return cls(position=int(run.positions[row]), true=run.classes[run.labels[row]],
                   before=run.classes[run.predicted[row]], after=run.classes[after], **pictures)


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
             count: int, device: torch.device) -> list[Example]:
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
    return [Example.of(run, row, after[o], image=images[row], saliency=run.error_maps[o], erased=pictures[n],
                       mask=mask[n].cpu().numpy())
            for n, (o, row) in enumerate(zip(order, rows, strict=True))]
