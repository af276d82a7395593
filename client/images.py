"""Image files in and out for the client: PNG/JPEG files or folders read as uint8 RGB arrays, saliency
overlays and erased images written as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SUFFIXES = (".png", ".jpg", ".jpeg")
ERASED_GRAY = 128


def find_images(paths: list[Path]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) under named folders."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return found


def load(path: Path, height: int, width: int) -> tuple[np.ndarray, tuple[int, int] | None]:
    """(uint8 [height,width,3] RGB, the original (height, width) when it had to be resized, else None)."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    original = (rgb.height, rgb.width)
    if original == (height, width):
        return np.asarray(rgb, dtype=np.uint8), None
    return np.asarray(rgb.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8), original


def overlay(image: np.ndarray, saliency: np.ndarray, strength: float = 0.6) -> np.ndarray:
    """uint8 [H,W,3]: the image with saliency (scaled to its maximum) blended in as red."""
    scale = float(saliency.max())
    heat = saliency / scale if scale > 0 else np.zeros_like(saliency)
    alpha = (strength * heat)[..., None]
    red = np.array([255.0, 0.0, 0.0])
    return np.clip((1 - alpha) * image + alpha * red, 0, 255).astype(np.uint8)


def erased(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 [H,W,3]: the image with the erased pixels painted gray."""
    out = image.copy()
    out[mask] = ERASED_GRAY
    return out


def save_png(array: np.ndarray, path: Path, scale: int = 1) -> None:
    """Write uint8 [H,W,3] as PNG, enlarged `scale` times (nearest neighbour) so small images stay legible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    image.save(path, format="PNG")
