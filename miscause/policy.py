"""The correction policy (`policy.json` beside a model's config): written by the analysis, applied by the service.

Format {"version": 1, "top_percent": 5, "box": 3, "fill": ..., "saliency_method": "gradient",
"rules": [{"pred": "<class name>", "max_confidence": q}, ...], ...provenance}. An image predicted as a rule's
class with a top softmax probability at most `max_confidence` takes the erased image's label; every other keeps
its own. `Policy.correct` is that rule, the one implementation the analysis scores and the service serves.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from miscause.atomic import atomic_path
from miscause.erasure import SETTING_NAMES
from miscause.errors import MiscauseError
from miscause.repository import POLICY

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)


@dataclass(frozen=True)
class Policy:
    """Per-class confidence thresholds (NaN: no rule) and the erasure settings the policy was fitted with."""

    thresholds: np.ndarray
    defaults: dict = field(default_factory=dict)

    @classmethod
    def from_rules(cls, rules: dict[int, float], classes: int, defaults: dict | None = None) -> Policy:
        """A policy from {predicted class index: max_confidence}."""
        thresholds = np.full(classes, np.nan)
        for index, limit in rules.items():
            thresholds[index] = limit
        return cls(thresholds, defaults or {})

    def applies(self, labels: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
        """Bool [N]: which images the policy sends to the erased image's label."""
        limits = torch.as_tensor(self.thresholds, dtype=confidence.dtype, device=confidence.device)[labels]
        return confidence <= limits  # NaN (no rule) compares False

    def correct(self, labels: torch.Tensor, confidence: torch.Tensor, erased_labels: torch.Tensor,
                applies: torch.Tensor | None = None) -> torch.Tensor:
        """The corrected labels: the erased image's label where the policy applies, else the prediction;
        `applies`: `self.applies(labels, confidence)` when the caller has it already (the service selects the
        rows to explain by it)."""
        applies = self.applies(labels, confidence) if applies is None else applies
        return torch.where(applies, erased_labels, labels)


def parse_policy(raw: object, classes: list[str], source: str) -> Policy | None:
    """A Policy from policy.json's content, or None without one; a clear error when it is malformed."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise MiscauseError(f"{source}: a policy must be a JSON object")
    version = raw.get("version", FORMAT_VERSION)
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
    return Policy(thresholds=thresholds, defaults={key: raw[key] for key in SETTING_NAMES if key in raw})


def read_policy(model_dir: str | os.PathLike, classes: list[str]) -> Policy | None:
    """The model's policy, or None when its folder has no policy.json."""
    path = Path(model_dir) / POLICY
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MiscauseError(f"{path} is not valid JSON: {error}") from None
    return parse_policy(raw, classes, str(path))


def write_policy(path: str | os.PathLike, document: dict) -> None:
    """Write `policy.json` atomically: the service never reads half a file."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
