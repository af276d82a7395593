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
