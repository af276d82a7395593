"""Datasets as uint8 arrays: CIFAR-10 pickle batches or an ImageFolder tree, decoded once and cached.

Both formats are read by torchvision's own loaders; the decoded split is cached as one `.npz` per split,
keyed by the source files (paths, sizes, modification times), so a second run starts in seconds.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from miscause.atomic import atomic_path
from miscause.errors import MiscauseError
from miscause.pixels import normalize

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
VALIDATION_SIZE = 5000
VALIDATION_SEED = 20200101
SPLITS = ("train", "val", "test", "trainval")
FLIPS = ("random", "alternating")


@dataclass(frozen=True)
class Split:
    """One split held in memory: `images` uint8 [N,H,W,3], `labels` int64 [N], the class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def data_path(path: str | os.PathLike | None) -> Path:
    """The dataset root from a flag, else the `MISCAUSE_DATA` setting; a clear error when neither exists."""
    chosen = path or os.environ.get("MISCAUSE_DATA")
    if not chosen:
        raise MiscauseError("no dataset given: pass --data PATH or set MISCAUSE_DATA")
    root = Path(chosen).expanduser()
    if not root.exists():
        raise MiscauseError(f"dataset path does not exist: {root}")
    return root


def detect_format(root: Path) -> str:
    """`cifar10` for the pickle batches (root or its `cifar-10-batches-py`), `folder` for train/ and test/."""
    for base in (root, root / "cifar-10-batches-py"):
        if (base / "data_batch_1").is_file() and (base / "test_batch").is_file():
            return "cifar10"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "folder"
    raise MiscauseError(
        f"{root} is neither CIFAR-10 pickle batches (data_batch_1, test_batch) "
        "nor an image folder with train/<class>/ and test/<class>/"
    )


def download_cifar10(root: str | os.PathLike) -> Path:
    """Fetch CIFAR-10's pickle batches into `root` with torchvision (needs internet); return the root."""
    from torchvision import datasets

    datasets.CIFAR10(str(root), train=True, download=True)
    return Path(root)


def cache_dir() -> Path:
    """Where decoded splits are kept: `MISCAUSE_CACHE`, else `~/.cache/miscause`."""
    return Path(os.environ.get("MISCAUSE_CACHE", Path.home() / ".cache" / "miscause"))


def _source_key(root: Path, fmt: str, split: str) -> str:
    """A digest of every source file's relative path, size and mtime: any change makes a new cache entry."""
    base = root if fmt == "folder" else next(
        b for b in (root, root / "cifar-10-batches-py") if (b / "test_batch").is_file()
    )
    digest = hashlib.sha256(f"{fmt}:{base.resolve()}:{split}".encode())
    scan = base / split if fmt == "folder" else base
    for dirpath, dirnames, filenames in os.walk(scan):
        dirnames.sort()
        for name in sorted(filenames):
            stat = os.stat(os.path.join(dirpath, name))
            digest.update(f"{os.path.relpath(dirpath, scan)}/{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def _decode(root: Path, fmt: str, split: str) -> Split:
    """Decode one source split (`train` or `test`) with torchvision's loaders."""
    from torchvision import datasets

    if fmt == "cifar10":
        parent = root if (root / "cifar-10-batches-py").is_dir() else root.parent
        dataset = datasets.CIFAR10(str(parent), train=split == "train", download=False)
        return Split(np.ascontiguousarray(dataset.data), np.asarray(dataset.targets, np.int64),
                     tuple(dataset.classes))
    try:
        dataset = datasets.ImageFolder(str(root / split))
    except (FileNotFoundError, RuntimeError) as error:
        raise MiscauseError(f"cannot read image folder {root / split}: {error}") from error
    images, labels = [], []
    first_size = None
    for path, label in dataset.samples:
        try:
            image = np.asarray(dataset.loader(path).convert("RGB"))
        except Exception as error:  # PIL raises many types for corrupt files
            raise MiscauseError(f"cannot decode image {path}: {error}") from error
        first_size = first_size or image.shape
        if image.shape != first_size:
            raise MiscauseError(f"{path} is {image.shape[1]}x{image.shape[0]}, the split's first image "
                                f"{first_size[1]}x{first_size[0]}: resize the folder to one size first")
        images.append(image)
        labels.append(label)
    return Split(np.stack(images), np.asarray(labels, np.int64), tuple(dataset.classes))


def _load_source_split(root: Path, split: str) -> Split:
    """A source split through the cache."""
    fmt = detect_format(root)
    path = cache_dir() / f"{fmt}-{split}-{_source_key(root, fmt, split)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as cached:
            return Split(cached["images"], cached["labels"], tuple(str(c) for c in cached["classes"]))
    data = _decode(root, fmt, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, images=data.images, labels=data.labels, classes=np.asarray(data.classes))
    return data


def validation_indices(n_train: int, size: int = VALIDATION_SIZE) -> np.ndarray:
    """The fixed-seed positions in the train split that form the validation split (sorted)."""
    if n_train <= size:
        size = max(1, n_train // 10)
    order = np.random.default_rng(VALIDATION_SEED).permutation(n_train)
    return np.sort(order[:size])


def load_split(path: str | os.PathLike | None, split: str) -> Split:
    """`train` (minus validation), `val` (5,000 fixed-seed train images), `trainval` (all of train), `test`."""
    if split not in SPLITS:
        raise MiscauseError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    root = data_path(path)
    if split == "test":
        return _load_source_split(root, "test")
    full = _load_source_split(root, "train")
    if split == "trainval":
        return full
    held = validation_indices(len(full))
    keep = held if split == "val" else np.setdiff1d(np.arange(len(full)), held)
    return Split(full.images[keep], full.labels[keep], full.classes)


class GpuLoader:
    """Batches from a split held on the training device: crop-with-padding and flip done there, in bulk.

    The whole split lives on the device as normalised float tensors (CIFAR-10 is 600 MB as float32), so each
    epoch is one random permutation plus two tensor ops; the loader is never the bottleneck.
    """

    def __init__(self, split: Split, batch_size: int, device: torch.device, mean: tuple[float, ...],
                 std: tuple[float, ...], train: bool, pad: int = 4, flip: str = "random", seed: int = 0,
                 drop_last: bool = False, memory_format: torch.memory_format = torch.contiguous_format) -> None:
        if flip not in FLIPS:
            raise MiscauseError(f"unknown flip {flip!r}: choose one of {', '.join(FLIPS)}")
        self.images = normalize(torch.from_numpy(split.images).to(device), mean, std)
        self.labels = torch.from_numpy(split.labels).to(device)
        self.batch_size, self.train, self.pad, self.drop_last = batch_size, train, pad, drop_last
        self.flip, self.memory_format = flip, memory_format
        if train and pad:
            self.padded = torch.nn.functional.pad(self.images, (pad,) * 4, mode="reflect")
        if flip == "alternating":
            self.first_flips = torch.rand(len(self.labels), generator=torch.Generator().manual_seed(seed)) < 0.5

    def flips(self, generator: torch.Generator, epoch: int) -> torch.Tensor:
        """Which images to mirror this epoch. `alternating` (Jordan, 2024): a random half in even epochs, the
        other half in odd ones, so every pair of epochs shows each image both ways."""
        if self.flip == "alternating":
            return (self.first_flips ^ bool(epoch % 2)).to(self.images.device)
        return (torch.rand(len(self.labels), generator=generator) < 0.5).to(self.images.device)

    def augmented(self, generator: torch.Generator, epoch: int = 0) -> torch.Tensor:
        """One epoch's augmented copy of the split: random translate within the padding, then the flips."""
        n, _, h, w = self.images.shape
        out = torch.empty_like(self.images)
        shifts = torch.randint(0, 2 * self.pad + 1, (2,) + (n,), generator=generator, device="cpu")
        # group images by their (dy, dx) shift so each crop is one slicing op over a subset
        codes = shifts[0] * (2 * self.pad + 1) + shifts[1]
        for code in torch.unique(codes).tolist():
            index = (codes == code).nonzero().squeeze(1).to(self.images.device)
            dy, dx = divmod(code, 2 * self.pad + 1)
            out[index] = self.padded[index, :, dy:dy + h, dx:dx + w]
        flip = self.flips(generator, epoch)
        out[flip] = out[flip].flip(-1)
        return out

    def epoch(self, generator: torch.Generator, rank: int = 0, world: int = 1, epoch: int = 0):
        """Yield `(images, labels)` batches for epoch `epoch`, shuffled and augmented when training.

        With `world` > 1 each rank takes every world-th image of the same permutation (data parallelism).
        """
        n = len(self.labels)
        if self.train:
            images = self.augmented(generator, epoch) if self.pad else self.images
            order = torch.randperm(n, generator=generator).to(self.images.device)
        else:
            images, order = self.images, torch.arange(n, device=self.images.device)
        order = order[rank::world]
        n = len(order)
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            index = order[start:start + self.batch_size]
            yield images[index].contiguous(memory_format=self.memory_format), self.labels[index]
