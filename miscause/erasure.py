"""The erasure settings every part that erases speaks: the anchor share p, the box side b, the fill and the
saliency method, with the one check of p, b and the method.

The kernels' argument check, the service's request parameters, the policy file's keys and the analysis's options
are all this record; each adds only what is its own (the service bounds b by the image, the analysis names fills
such as `blur`). The values are `miscause.defaults`; the method names are `miscause.kernels.METHODS`, which the
core does not import, so `check` takes the names a caller offers.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from miscause.defaults import BOX, SALIENCY_METHOD, TOP_PERCENT


@dataclass(frozen=True, kw_only=True)
class ErasureSettings:
    """Erase b x b boxes around the top p% pixels of the `saliency_method` map, filling them with `fill`.

    `fill` None is 0 in normalised units on every channel (the dataset mean); numbers are one normalised value
    per channel; the analysis also accepts the fill names of `miscause.jobs.analysis.erasure.fills`.
    """

    top_percent: float = TOP_PERCENT
    box: int = BOX
    fill: Any = None
    saliency_method: str = SALIENCY_METHOD

    def check(self, methods: Sequence[str] | None = None) -> None:
        """A ValueError saying what is wrong with p, b or (given the names on offer) the saliency method."""
        p, b = self.top_percent, self.box
        if isinstance(p, bool) or not isinstance(p, numbers.Real):
            raise ValueError(f"top_percent must be a number in (0, 100], got {p!r}")
        if not 0 < p <= 100:
            raise ValueError(f"top_percent must be in (0, 100], got {p!r}")
        if isinstance(b, bool) or not isinstance(b, int) or b < 1 or b % 2 == 0:
            raise ValueError(f"box must be an odd integer >= 1 (the side of the square erased around each anchor), "
                             f"got {b!r}")
        if methods is not None and self.saliency_method not in methods:
            raise ValueError(f"saliency_method must be one of {', '.join(methods)}, got {self.saliency_method!r}")


SETTING_NAMES = tuple(f.name for f in fields(ErasureSettings))  # the keys a policy file or a request may set
