"""A model's correction policy (policy.json, written by the analysis job), read defensively.

Format: {"version": 1, "top_percent": 5, "box": 3, "fill": ..., "saliency_method": "gradient",
"rules": [{"pred": "<class name>", "max_confidence": q}, ...]}. A sample predicted as a rule's class with a
top softmax probability at most `max_confidence` takes the erased image's label; every other keeps its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from miscause.errors import MiscauseError

SUPPORTED_VERSIONS = (1,)


@dataclass(frozen=True)
class Policy:
    """Per-class confidence thresholds (NaN: no rule) and the erasure defaults the policy was fit with."""

    thresholds: np.ndarray
    defaults: dict

    def applies(self, labels: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
        """Bool [N]: which samples the policy sends to the erased image's label."""
        limits = torch.as_tensor(self.thresholds, dtype=confidence.dtype, device=confidence.device)[labels]
        return confidence <= limits  # NaN (no rule) compares False


def parse_policy(raw: dict | None, classes: list[str], source: str) -> Policy | None:
    """A Policy from policy.json's content, or None without one; a clear error when it is malformed."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise MiscauseError(f"{source}: a policy must be a JSON object")
    version = raw.get("version", 1)
    if version not in SUPPORTED_VERSIONS:
        raise MiscauseError(f"{source}: policy version {version!r} not supported ({SUPPORTED_VERSIONS})")
    rules = raw.get("rules", [])
    if not isinstance(rules, list):
        raise MiscauseError(f"{source}: 'rules' must be a list")
    thresholds = np.full(len(classes), np.nan)
    for number, rule in enumerate(rules):
        if not isinstance(rule, dict) or "pred" not in rule or "max_confidence" not in rule:
            raise MiscauseError(f"{source}: rule {number} needs 'pred' and 'max_confidence'")
        pred, limit = rule["pred"], rule["max_confidence"]
        index = classes.index(pred) if pred in classes else pred
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(classes):
            raise MiscauseError(f"{source}: rule {number} names an unknown class {pred!r}")
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 <= limit <= 1:
            raise MiscauseError(f"{source}: rule {number} max_confidence must be a number in [0, 1]")
        thresholds[index] = float(limit) if np.isnan(thresholds[index]) else max(thresholds[index], limit)
    defaults = {key: raw[key] for key in ("top_percent", "box", "fill", "saliency_method") if key in raw}
    return Policy(thresholds=thresholds, defaults=defaults)
