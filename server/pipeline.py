"""One batch through the stages its requests need: forward pass, saliency, erasure, erased forward pass.

Each request in a batch names its outputs and its own explanation parameters; the forward pass runs once
for the whole batch, saliency once per saliency method over the images that need it, erasure once per set of
erasure parameters, and the erased images' forward pass once. `CORRECTED_LABEL` sends only the images its
policy rules select through the explanation stages.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from miscause.policy import Policy
from miscause.proto import names
from miscause.server.backends import Backend
from miscause.server.parameters import Explain

SALIENCY_OUTPUTS = frozenset({names.SALIENCY, names.MASK, names.ERASED_LABEL, names.ERASED_PROBS})
ERASURE_OUTPUTS = frozenset({names.MASK, names.ERASED_LABEL, names.ERASED_PROBS})


@dataclass(frozen=True)
class Work:
    """One decoded request: images (uint8 [n,H,W,C] or normalised float32 [n,C,H,W]), outputs, parameters."""

    images: np.ndarray
    outputs: tuple[str, ...]
    explain: Explain

    @property
    def count(self) -> int:
        return int(self.images.shape[0])


def _rows(works: list[Work]) -> list[torch.Tensor]:
    """Each request's row indices in the concatenated batch."""
    bounds = np.cumsum([0] + [w.count for w in works])
    return [torch.arange(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def run(backend: Backend, policy: Policy | None, works: list[Work]) -> list[dict[str, np.ndarray]]:
    """Every request's requested outputs, as numpy arrays, for one batch."""
    with backend.on_stream():
        return _run(backend, policy, works)


def _run(backend: Backend, policy: Policy | None, works: list[Work]) -> list[dict[str, np.ndarray]]:
    images = backend.upload([w.images for w in works])
    rows = _rows(works)
    logits = backend.logits(images)
    probs = torch.softmax(logits.float(), dim=1)
    confidence, labels = probs.max(dim=1)

    explained = torch.zeros(len(images), dtype=torch.bool, device=images.device)
    for work, index in zip(works, rows, strict=True):
        if SALIENCY_OUTPUTS & set(work.outputs):
            explained[index] = True
        elif names.CORRECTED_LABEL in work.outputs and policy is not None:
            explained[index] = policy.applies(labels[index], confidence[index])
    explained_cpu = explained.cpu()

    saliency = torch.zeros((len(images), backend.height, backend.width), device=images.device)
    mask = torch.zeros_like(saliency, dtype=torch.bool)
    erased_logits = torch.zeros_like(logits)
    by_method: dict[str, list[torch.Tensor]] = defaultdict(list)
    by_erasure: dict[tuple, list[torch.Tensor]] = defaultdict(list)
    targets = labels.clone()
    for work, index in zip(works, rows, strict=True):
        chosen = index[explained_cpu[index]]
        if len(chosen) == 0:
            continue
        if work.explain.target is not None:
            targets[chosen] = work.explain.target
        by_method[work.explain.saliency_method].append(chosen)
        if ERASURE_OUTPUTS & set(work.outputs) or names.CORRECTED_LABEL in work.outputs:
            by_erasure[(work.explain.top_percent, work.explain.box, work.explain.fill)].append(chosen)
    for method, parts in by_method.items():
        index = torch.cat(parts).to(images.device)
        saliency[index] = backend.saliency(images[index], method, targets[index])
    erased_parts, erased_index = [], []
    for (top_percent, box, fill), parts in by_erasure.items():
        index = torch.cat(parts).to(images.device)
        erased, mask[index] = backend.erase(images[index], saliency[index], top_percent, box, fill)
        erased_parts.append(erased)
        erased_index.append(index)
    if erased_parts:
        index = torch.cat(erased_index)
        erased_logits[index] = backend.logits(torch.cat(erased_parts)).to(erased_logits.dtype)
    erased_probs = torch.softmax(erased_logits.float(), dim=1)
    erased_labels = erased_probs.argmax(dim=1)
    corrected = labels.clone()
    if policy is not None:
        replace = explained & policy.applies(labels, confidence)
        corrected[replace] = erased_labels[replace]

    tensors = {names.LOGITS: logits, names.PROBS: probs, names.LABEL: labels, names.SALIENCY: saliency,
               names.MASK: mask, names.ERASED_LABEL: erased_labels, names.ERASED_PROBS: erased_probs,
               names.CORRECTED_LABEL: corrected}
    wanted = {name for work in works for name in work.outputs}
    host = {name: tensors[name].detach().cpu().numpy() for name in wanted}
    return [{name: host[name][index.numpy()] for name in work.outputs}
            for work, index in zip(works, rows, strict=True)]
