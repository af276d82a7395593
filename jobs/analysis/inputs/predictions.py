"""One model's predictions on a split, as the analysis reads them: validated arrays, from a file or from memory.

A predictions file is the `.npz` that `miscause evaluate` writes: `logits` float32 [N,K], `labels` int64 [N],
`indices` int64 [N] (position in the split), `classes` str [K], and optionally `name` (else the file stem).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from miscause.errors import MiscauseError

REQUIRED = ("logits", "labels", "indices", "classes")


@dataclass(frozen=True)
class Predictions:
    """Validated predictions of one model: finite logits [N,K], labels and split positions [N], K class names."""

    name: str
    logits: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    classes: tuple[str, ...]
    source: str = ""

    @property
    def predicted(self) -> np.ndarray:
        """Arg-max class per sample."""
        return self.logits.argmax(axis=1)

    def __len__(self) -> int:
        return len(self.labels)


def make_predictions(name: str, logits: np.ndarray, labels: np.ndarray, indices: np.ndarray,
                     classes: tuple[str, ...] | list[str], source: str = "") -> Predictions:
    """Check shapes, dtypes, label range and finiteness; a `MiscauseError` naming `source` if anything is off."""
    where = source or name
    logits, labels, indices = np.asarray(logits), np.asarray(labels), np.asarray(indices)
    classes = tuple(str(c) for c in np.asarray(classes).reshape(-1))
    if logits.ndim != 2:
        raise MiscauseError(f"{where}: logits must be [N,K], got shape {list(logits.shape)}")
    n, k = logits.shape
    if n == 0:
        raise MiscauseError(f"{where}: holds no samples")
    if k < 2 or len(classes) != k:
        raise MiscauseError(f"{where}: logits have {k} columns but there are {len(classes)} class names")
    if len(set(classes)) != k:
        raise MiscauseError(f"{where}: class names repeat: {list(classes)}")
    if labels.shape != (n,) or indices.shape != (n,):
        raise MiscauseError(f"{where}: labels {list(labels.shape)} and indices {list(indices.shape)} "
                            f"must both be [{n}] like the logits")
    if not np.issubdtype(labels.dtype, np.integer) or not np.issubdtype(indices.dtype, np.integer):
        raise MiscauseError(f"{where}: labels and indices must be integers")
    if not np.issubdtype(logits.dtype, np.floating):
        raise MiscauseError(f"{where}: logits must be floating point, got {logits.dtype}")
    if labels.min() < 0 or labels.max() >= k:
        raise MiscauseError(f"{where}: labels must lie in [0, {k - 1}]")
    if len(np.unique(indices)) != n:
        raise MiscauseError(f"{where}: indices repeat")
    bad = ~np.isfinite(logits).all(axis=1)
    if bad.any():
        raise MiscauseError(f"{where}: {int(bad.sum())} of {n} rows of logits hold NaN or Inf "
                            f"(first at row {int(bad.argmax())})")
    return Predictions(name, logits.astype(np.float32), labels.astype(np.int64), indices.astype(np.int64),
                       classes, source)


def load_predictions(path: str | os.PathLike) -> Predictions:
    """Read and validate one predictions file; every failure is a `MiscauseError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MiscauseError(f"predictions file not found: {path}")
    if path.stat().st_size == 0:
        raise MiscauseError(f"{path}: file is empty")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in REQUIRED if key not in data.files]
            if missing:
                raise MiscauseError(f"{path}: not a predictions file, missing {', '.join(missing)}")
            arrays = {key: data[key] for key in REQUIRED}
            name = str(data["name"]) if "name" in data.files else path.stem
    except MiscauseError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise MiscauseError(f"{path}: cannot read as .npz ({error})") from error
    return make_predictions(name, arrays["logits"], arrays["labels"], arrays["indices"], arrays["classes"],
                            str(path))


def align(predictions: list[Predictions]) -> dict[str, Predictions]:
    """Models keyed by name, all sorted by split position; different classes, samples or labels are errors."""
    if not predictions:
        raise MiscauseError("no predictions given")
    names = [p.name for p in predictions]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise MiscauseError(f"model names repeat: {', '.join(repeated)} (rename the files or set their `name`)")
    first = predictions[0]
    out: dict[str, Predictions] = {}
    for p in predictions:
        if p.classes != first.classes:
            raise MiscauseError(f"{p.source or p.name}: classes {list(p.classes)} differ from "
                                f"{first.source or first.name}: {list(first.classes)}")
        if len(p) != len(first):
            raise MiscauseError(f"{p.source or p.name}: {len(p)} samples, but {first.source or first.name} "
                                f"has {len(first)}: all models must be evaluated on the same split")
        order = np.argsort(p.indices, kind="stable")
        out[p.name] = Predictions(p.name, p.logits[order], p.labels[order], p.indices[order], p.classes,
                                  p.source)
    reference = out[first.name]
    for p in out.values():
        if not np.array_equal(p.indices, reference.indices):
            raise MiscauseError(f"{p.source or p.name}: sample indices differ from "
                                f"{reference.source or reference.name}: not the same split")
        if not np.array_equal(p.labels, reference.labels):
            raise MiscauseError(f"{p.source or p.name}: labels differ from {reference.source or reference.name} "
                                "for the same samples")
    return out
