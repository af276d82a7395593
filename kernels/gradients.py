"""What every saliency method shares: the input gradient of the chosen logits, the per-pixel reduction, the
class per image, the input check and eval mode for the call.

The backward pass is batched (the selected logits of all images summed and differentiated once), which is
exact because the model runs in eval mode, where the images of a batch do not influence each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

Target = int | torch.Tensor | None


def input_gradient(model: nn.Module, images: torch.Tensor, target: Target = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(d logit[target] / d images [N, C, H, W], logits [N, K] float32): one forward and one batched backward.

    The raw gradient is what `erase(..., from_gradient=True)` takes, reducing it over channels inside the kernel.
    """
    check_images(images)
    with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        inputs = trackable(images).requires_grad_(True)
        logits = model(inputs)
        classes = classes_of(target, logits)
        (grad,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), inputs)
    return grad, logits.detach().float()


def per_pixel(attribution: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, H, W] float32: the largest magnitude over channels (of a raw gradient: its map)."""
    return attribution.detach().abs().amax(dim=1).float()


def clean_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """float32 logits [N, K] of the images, without gradients, in eval mode: what the methods that
    differentiate other inputs than the images themselves return."""
    with eval_mode(model), torch.no_grad():
        return model(images).float()


def trackable(images: torch.Tensor) -> torch.Tensor:
    """The images detached and, when made under `torch.inference_mode()`, copied out of it, so autograd can
    record operations on them."""
    return (images.clone() if images.is_inference() else images).detach()


def classes_of(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """The class per image as a long [N] tensor: the target (int or [N]) or the argmax of the logits; a
    per-image target of -1 also means that image's argmax."""
    n = logits.shape[0]
    predicted = logits.detach().argmax(dim=1)
    if target is None:
        return predicted
    classes = torch.as_tensor(target, device=logits.device).long().reshape(-1)
    if classes.numel() == 1:
        classes = classes.expand(n)
    if classes.numel() != n:
        raise ValueError(f"target must be one class or one per image ({n}), got {classes.numel()}")
    if bool(((classes < -1) | (classes >= logits.shape[1])).any()):
        raise ValueError(f"target classes must lie in [0, {logits.shape[1]}) (or -1: the predicted class)")
    return torch.where(classes < 0, predicted, classes)


def check_images(images: torch.Tensor) -> None:
    """Saliency needs a floating [N, C, H, W] batch."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a floating-point [N, C, H, W] tensor, got {shape}")


@contextmanager
def eval_mode(model: Callable[..., torch.Tensor]) -> Iterator[None]:
    """Eval mode for the call, the previous mode restored after; modules that refuse to switch run as they are."""
    switched = False
    if isinstance(model, nn.Module) and model.training:
        try:
            model.eval()
            switched = True
        except NotImplementedError:
            pass
    try:
        yield
    finally:
        if switched:
            model.train()
