"""Request parameters of the explanation and erasure stages: names, defaults, validation.

Defaults come from the model's policy.json where it sets them, else from the study (`miscause.erasure.ErasureSettings`:
boxes anchored at the top 5% saliency pixels); a request overrides any of them for its own images. p, b and the
method are checked by `ErasureSettings.check`; the service adds only that a box fits the image.

`fill` is the value erased pixels take, in normalised units, one per channel (None: 0 on every channel, the
dataset mean). A request sends one number (every channel) or a string of comma-separated numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from miscause.erasure import ErasureSettings
from miscause.kernels import METHODS
from miscause.server.status import listed, shown

BUILTIN_DEFAULTS = {**asdict(ErasureSettings()), "target": None}
NAMES = tuple(BUILTIN_DEFAULTS)


@dataclass(frozen=True)
class Explain:
    """How one request's images are explained and erased; `target` None explains the predicted class."""

    top_percent: float
    box: int
    fill: tuple[float, ...] | None
    saliency_method: str
    target: int | None

    def as_dict(self) -> dict:
        return asdict(self)


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"parameter {name} must be a finite number, got {shown(value)}")
    return float(value)


def _integer(name: str, value: object) -> int:
    number = _number(name, value)
    if number != int(number):
        raise ValueError(f"parameter {name} must be an integer, got {shown(value)}")
    return int(number)


def _fill(value: object, channels: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parts = [float(part) for part in value.split(",")]
        except ValueError:
            raise ValueError(f"parameter fill must be numbers separated by commas, got {shown(value)}") from None
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        parts = [value]
    numbers = [_number("fill", part) for part in parts]
    if len(numbers) == 1:
        numbers *= channels
    if len(numbers) != channels:
        raise ValueError(f"parameter fill needs 1 or {channels} values (one per channel), got {len(numbers)}")
    return tuple(numbers)


def resolve(values: dict, defaults: dict, classes: list[str], height: int, width: int,
            channels: int = 3, methods: tuple[str, ...] = METHODS) -> Explain:
    """Explain from request values over defaults, each checked; ValueError names what is wrong. `methods` are the
    saliency methods the model offers."""
    unknown = sorted(set(values) - set(NAMES))
    if unknown:
        raise ValueError(f"unknown parameter(s) {listed(unknown)}; known: {', '.join(NAMES)}")
    merged = {**BUILTIN_DEFAULTS, **defaults, **values}
    settings = ErasureSettings(top_percent=_number("top_percent", merged["top_percent"]),
                               box=_integer("box", merged["box"]), fill=_fill(merged["fill"], channels),
                               saliency_method=merged["saliency_method"])
    try:
        settings.check()  # p and b; the method is a client's string, shown elided below
    except ValueError as error:
        raise ValueError(f"parameter {error}") from None
    if settings.box > min(height, width):
        raise ValueError(f"parameter box must be an odd integer in 1..{min(height, width)}, got {settings.box}")
    if settings.saliency_method not in methods:
        known = ", ".join(methods)
        raise ValueError(f"parameter saliency_method must be one of {known}, got {shown(settings.saliency_method)}")
    target = merged["target"]
    if isinstance(target, str):
        if target not in classes:
            raise ValueError(f"parameter target names no class of this model: {shown(target)}")
        target = classes.index(target)
    elif target is not None:
        target = _integer("target", target)
        if not 0 <= target < len(classes):
            raise ValueError(f"parameter target must lie in 0..{len(classes) - 1}, got {target}")
    return Explain(**asdict(settings), target=target)
