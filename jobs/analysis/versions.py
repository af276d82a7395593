"""The versions a record states: Python, the platform and the packages the jobs use (importing none of them)."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("miscause", "numpy", "scipy", "networkx", "matplotlib", "torch", "torchvision", "onnxruntime")


def versions() -> dict[str, str]:
    """Versions of Python, the platform and the packages the analysis uses."""
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found
