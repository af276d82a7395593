"""Both dataset formats through torchvision's loaders, the decode cache and the validation split."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import torch
from torchvision import datasets

from miscause.errors import MiscauseError
from miscause.jobs.training import data


def write_cifar10_batches(root, n_per_batch: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10's pickle layout (data_batch_1..5, test_batch, batches.meta) with random images."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    images, labels = [], []
    for name in names:
        x = rng.integers(0, 256, (n_per_batch, 3 * 32 * 32), dtype=np.uint8)
        y = rng.integers(0, 10, n_per_batch).tolist()
        with open(base / name, "wb") as handle:
            pickle.dump({"data": x, "labels": y}, handle)
        images.append(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(y))
    with open(base / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle)
    return np.concatenate(images[:5]), np.concatenate(labels[:5])


@pytest.fixture
def cifar10_batches(tmp_path, monkeypatch):
    """Pickle batches plus torchvision's checksum table pointed at them (its integrity check stays on)."""
    train_images, train_labels = write_cifar10_batches(tmp_path)
    base = tmp_path / "cifar-10-batches-py"

    def digest(name):
        return [name, hashlib.md5((base / name).read_bytes()).hexdigest()]

    monkeypatch.setattr(datasets.CIFAR10, "train_list", [digest(f"data_batch_{i}") for i in range(1, 6)])
    monkeypatch.setattr(datasets.CIFAR10, "test_list", [digest("test_batch")])
    monkeypatch.setitem(datasets.CIFAR10.meta, "md5", hashlib.md5((base / "batches.meta").read_bytes()).hexdigest())
    return tmp_path, train_images, train_labels


def test_cifar10_batches_load_through_torchvision(cifar10_batches):
    root, images, labels = cifar10_batches
    assert data.detect_format(root) == "cifar10"
    full = data.load_split(root, "trainval")
    assert full.images.shape == (100, 32, 32, 3) and full.images.dtype == np.uint8
    np.testing.assert_array_equal(full.images, images)
    np.testing.assert_array_equal(full.labels, labels)
    assert full.classes == tuple(f"class{i}" for i in range(10))
    assert len(data.load_split(root / "cifar-10-batches-py", "test")) == 20


def test_image_folder_loads_and_is_cached(tiny_folder, monkeypatch):
    test = data.load_split(tiny_folder, "test")
    assert test.images.shape == (48, 32, 32, 3)
    assert test.classes == ("circle", "cross", "square")
    assert np.bincount(test.labels).tolist() == [16, 16, 16]

    def no_decode(*_):
        raise AssertionError("decoded again although the cache holds this split")

    monkeypatch.setattr(data, "_decode", no_decode)
    again = data.load_split(tiny_folder, "test")
    np.testing.assert_array_equal(again.images, test.images)


def test_cache_key_changes_when_a_file_changes(tmp_path):
    from conftest import make_image_folder

    root = make_image_folder(tmp_path / "d", per_class={"train": 2, "test": 2})
    first = data._source_key(root, "folder", "test")
    victim = next((root / "test" / "circle").iterdir())
    victim.write_bytes(victim.read_bytes() + b"\0")
    assert data._source_key(root, "folder", "test") != first


def test_validation_split_is_fixed_and_disjoint(cifar10_batches):
    root = cifar10_batches[0]
    full, train, val = (data.load_split(root, s) for s in ("trainval", "train", "val"))
    assert len(train) + len(val) == len(full)
    held = data.validation_indices(len(full))
    np.testing.assert_array_equal(val.images, full.images[held])
    np.testing.assert_array_equal(held, data.validation_indices(len(full)))
    assert data.validation_indices(50_000).size == 5000


@pytest.mark.parametrize("layout", ["missing", "no_splits", "mixed_sizes", "corrupt"])
def test_bad_datasets_are_clear_errors(tmp_path, layout):
    from PIL import Image

    root = tmp_path / "data"
    if layout == "no_splits":
        (root / "images").mkdir(parents=True)
    elif layout in ("mixed_sizes", "corrupt"):
        for split in ("train", "test"):
            (root / split / "a").mkdir(parents=True)
            Image.new("RGB", (32, 32)).save(root / split / "a" / "0.png")
            if layout == "mixed_sizes":
                Image.new("RGB", (16, 16)).save(root / split / "a" / "1.png")
            else:
                (root / split / "a" / "1.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(MiscauseError):
        data.load_split(root, "test")


def test_gpu_loader_augments_within_padding(tiny_folder):
    split = data.load_split(tiny_folder, "train")
    loader = data.GpuLoader(split, 16, torch.device("cpu"), data.CIFAR10_MEAN, data.CIFAR10_STD, train=True)
    augmented = loader.augmented(torch.Generator().manual_seed(0))
    assert augmented.shape == loader.images.shape
    assert not torch.equal(augmented, loader.images)
    batches = list(loader.epoch(torch.Generator().manual_seed(0)))
    assert sum(len(labels) for _, labels in batches) == len(split)
    again = list(loader.epoch(torch.Generator().manual_seed(0)))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
