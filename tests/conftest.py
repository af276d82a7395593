"""Shared fixtures: where the CIFAR-10 copy lives, and small image datasets the tests make themselves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cifar10_root() -> Path:
    """The shared CIFAR-10 folder (`MISCAUSE_DATA`, else ../shared/data/cifar10); skips visibly when absent."""
    root = Path(os.environ.get("MISCAUSE_DATA", REPO.parent / "shared" / "data" / "cifar10"))
    if not (root / "test").is_dir():
        pytest.skip(f"CIFAR-10 not found at {root} (set MISCAUSE_DATA to run this test)")
    return root


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Decoded-split caches of test-made data go to a temporary folder, not the user's cache."""
    if "MISCAUSE_CACHE" not in os.environ:
        os.environ["MISCAUSE_CACHE"] = str(tmp_path_factory.mktemp("cache"))


def make_image_folder(root: Path, classes: tuple[str, ...] = ("circle", "cross", "square"),
                      per_class: dict[str, int] | None = None, size: int = 32, seed: int = 0) -> Path:
    """An ImageFolder tree of PNGs whose class is visible (a tinted shape on noise), so models can learn it."""
    import numpy as np
    from PIL import Image

    per_class = per_class or {"train": 48, "test": 16}
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
                image[..., label % 3] += 120
                lo, hi = size // 4, 3 * size // 4
                if label % 3 == 0:
                    image[lo:hi, lo:hi] = 255
                elif label % 3 == 1:
                    image[size // 2 - 2:size // 2 + 2, :] = 255
                    image[:, size // 2 - 2:size // 2 + 2] = 255
                Image.fromarray(image).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-class 32x32 ImageFolder tree (48 train and 16 test images per class)."""
    return make_image_folder(tmp_path_factory.mktemp("tiny"))
