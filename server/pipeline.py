"""One batch through the stages its requests need: forward pass, saliency, erasure, erased forward pass.

Each request in a batch names its outputs and its own explanation parameters; the forward pass runs once
for the whole batch, saliency once per saliency method over the images that need it, erasure once per route
(map or raw gradient) and set of erasure parameters, and the erased images' forward pass once.
`CORRECTED_LABEL` sends only the images its policy rules select through the explanation stages.

The `gradient` method's map is max over channels of |gradient|, so its images keep the raw input gradient
instead: the erasure reduces it inside the kernel, and the map is built only for requests asking `SALIENCY`.
Other methods compute their map and erase from it. Gradients are taken with respect to the input only. When
every request of a batch needs the explanation of every image (SALIENCY, MASK, ERASED_*), the explanation pass
(the torch program) gives the logits and the ONNX Runtime forward pass is skipped; otherwise ONNX Runtime
computes them and `CORRECTED_LABEL` sends only the images its policy selects through the explanation.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from miscause import kernels
from miscause.policy import Policy
from miscause.proto import names
from miscause.server.backends import Backend
from miscause.server.parameters import Explain
from miscause.server.statistics import StageTimes

SALIENCY_OUTPUTS = frozenset({names.SALIENCY, names.MASK, names.ERASED_LABEL, names.ERASED_PROBS})
ERASURE_OUTPUTS = frozenset({names.MASK, names.ERASED_LABEL, names.ERASED_PROBS})
GRADIENT = "gradient"  # the method whose images are erased straight from their raw gradient


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


def run(backend: Backend, policy: Policy | None, works: list[Work],
        times: StageTimes | None = None) -> list[dict[str, np.ndarray]]:
    """Every request's requested outputs, as numpy arrays, for one batch; `times` gets each stage's wall time."""
    with backend.on_stream():
        return _run(backend, policy, works, times or StageTimes())


def _run(backend: Backend, policy: Policy | None, works: list[Work],
         times: StageTimes) -> list[dict[str, np.ndarray]]:
    started = time.perf_counter_ns()
    rows = _rows(works)
    wanted = {name for work in works for name in work.outputs}
    explains = bool(SALIENCY_OUTPUTS & wanted or (policy is not None and names.CORRECTED_LABEL in wanted))
    parts = [w.images for w in works]
    if not explains and backend.reads_pixels(parts):
        uploaded = started  # the request bytes go to ONNX Runtime as they came
        return _host(works, rows, _forward(backend.pixel_logits(parts)), times, started, uploaded)
    images = backend.upload(parts)
    uploaded = time.perf_counter_ns()
    every_image = all(SALIENCY_OUTPUTS & set(work.outputs) for work in works)
    if every_image:
        # every image is explained whatever it is predicted: the explanation pass gives the logits too
        explained = torch.ones(len(images), dtype=torch.bool, device=images.device)
        plan = _plan(works, rows, explained.cpu(), torch.full((len(images),), -1, device=images.device))
        saliency, gradient, logits = _explain(backend, images, plan)
    else:
        logits = backend.logits(images)
    tensors = _forward(logits)
    probs, labels = tensors[names.PROBS], tensors[names.LABEL]
    confidence = probs.max(dim=1).values
    # the explanation stages only when an output needs them: a LABEL-only batch waits for nothing on the device
    # and copies only its outputs to the host
    if explains:
        # the policy's selection, once for the batch: it picks the rows to explain and then the corrected labels
        applies = None if policy is None else policy.applies(labels, confidence)
        if not every_image:
            explained = _explained(applies, works, rows, labels)
            plan = _plan(works, rows, explained.cpu(), labels)
            saliency, gradient, _ = _explain(backend, images, plan)
        mask, erased_logits = _erase(backend, images, saliency, gradient, plan, logits)
        erased_probs = torch.softmax(erased_logits.float(), dim=1)
        erased_labels = erased_probs.argmax(dim=1)
        # the policy's one rule; a row it sends to its erased label but not explained here is one whose request
        # did not ask for CORRECTED_LABEL (`_explained`), so no answer reads its erased label
        corrected = labels if policy is None else policy.correct(labels, confidence, erased_labels, applies)
        tensors.update({names.SALIENCY: saliency, names.MASK: mask, names.ERASED_LABEL: erased_labels,
                        names.ERASED_PROBS: erased_probs, names.CORRECTED_LABEL: corrected})
    return _host(works, rows, tensors, times, started, uploaded)


def _forward(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs of the forward pass alone; CORRECTED_LABEL is LABEL until a policy replaces some."""
    probs = torch.softmax(logits.float(), dim=1)
    labels = probs.argmax(dim=1)
    return {names.LOGITS: logits, names.PROBS: probs, names.LABEL: labels, names.CORRECTED_LABEL: labels}


def _host(works: list[Work], rows: list[torch.Tensor], tensors: dict[str, torch.Tensor], times: StageTimes,
          started: int, uploaded: int) -> list[dict[str, np.ndarray]]:
    """Each request's outputs as host arrays; the stage times up to here recorded."""
    computed = time.perf_counter_ns()
    wanted = {name for work in works for name in work.outputs}
    host = {name: tensors[name].detach().cpu().numpy() for name in wanted}
    results = [{name: host[name][index.numpy()] for name in work.outputs}
               for work, index in zip(works, rows, strict=True)]
    times.compute_input, times.compute_infer = uploaded - started, computed - uploaded
    times.compute_output = time.perf_counter_ns() - computed
    return results


@dataclass(frozen=True)
class Plan:
    """The explanation stages' work for one batch: each row's class and which groups its row index is in."""

    targets: torch.Tensor  # [N] class explained per row (-1: its predicted class), on the device
    shown: torch.Tensor  # [N] bool on the host: the row's request asks for SALIENCY
    by_method: dict[str, list[torch.Tensor]]  # saliency method -> host row indices
    by_erasure: dict[tuple, list[torch.Tensor]]  # (from gradient, top_percent, box, fill) -> host row indices


def _explained(applies: torch.Tensor | None, works: list[Work], rows: list[torch.Tensor],
               labels: torch.Tensor) -> torch.Tensor:
    """Bool [N]: the rows that go through the explanation stages; `applies`: the rows the policy (if any) sends to
    their erased label (`Policy.applies` on the whole batch)."""
    explained = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
    for work, index in zip(works, rows, strict=True):
        if SALIENCY_OUTPUTS & set(work.outputs):
            explained[index] = True
        elif names.CORRECTED_LABEL in work.outputs and applies is not None:
            explained[index] = applies[index]
    return explained


def _plan(works: list[Work], rows: list[torch.Tensor], explained: torch.Tensor, labels: torch.Tensor) -> Plan:
    """The explained rows grouped by saliency method and by erasure route and settings."""
    plan = Plan(labels.clone(), torch.zeros(len(labels), dtype=torch.bool), defaultdict(list), defaultdict(list))
    for work, index in zip(works, rows, strict=True):
        chosen = index[explained[index]]
        if len(chosen) == 0:
            continue
        explain = work.explain
        if explain.target is not None:
            plan.targets[chosen] = explain.target
        plan.shown[chosen] = names.SALIENCY in work.outputs
        plan.by_method[explain.saliency_method].append(chosen)
        if ERASURE_OUTPUTS & set(work.outputs) or names.CORRECTED_LABEL in work.outputs:
            route = explain.saliency_method == GRADIENT
            plan.by_erasure[(route, explain.top_percent, explain.box, explain.fill)].append(chosen)
    return plan


def _explain(backend: Backend, images: torch.Tensor,
             plan: Plan) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(saliency [N,H,W], raw gradient [N,C,H,W] of the `gradient` rows or None, logits [N,K] of the explained
    rows' pass), once per method."""
    saliency = torch.zeros((len(images), backend.height, backend.width), device=images.device)
    gradient = torch.zeros_like(images) if GRADIENT in plan.by_method else None
    logits = torch.zeros((len(images), backend.class_count), device=images.device)
    for method, parts in plan.by_method.items():
        rows = torch.cat(parts)
        index = rows.to(images.device)
        if method == GRADIENT:
            gradient[index], logits[index] = backend.gradient(images[index], plan.targets[index])
            shown = rows[plan.shown[rows]].to(images.device)
            if len(shown):
                saliency[shown] = kernels.per_pixel(gradient[shown])
        else:
            saliency[index], logits[index] = backend.saliency(images[index], method, plan.targets[index])
    return saliency, gradient, logits


def _erase(backend: Backend, images: torch.Tensor, saliency: torch.Tensor, gradient: torch.Tensor | None,
           plan: Plan, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [N,H,W], erased logits [N,K]): erasure once per group, then one forward pass over every erased row.

    The groups' NaN/Inf and anchor checks are read back together, once the forward pass is queued behind them.
    """
    mask = torch.zeros_like(saliency, dtype=torch.bool)
    erased_logits = torch.zeros_like(logits)
    results, erased_index = [], []
    for (from_gradient, top_percent, box, fill), parts in plan.by_erasure.items():
        index = torch.cat(parts).to(images.device)
        ranking = gradient[index] if from_gradient else saliency[index]
        result = backend.erase(images[index], ranking, top_percent, box, fill, from_gradient)
        mask[index] = result.mask
        results.append(result)
        erased_index.append(index)
    if results:
        erased = torch.cat([result.erased for result in results])
        erased_logits[torch.cat(erased_index)] = backend.logits(erased).to(erased_logits.dtype)
        kernels.check_result(*results)
    return mask, erased_logits
