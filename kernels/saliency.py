"""Gradient saliency maps: which pixels a class logit is most sensitive to.

Three methods, each giving one float32 value per pixel ([N, H, W]), the per-pixel maximum over channels:

- `gradient` (Simonyan et al., 2014): |d logit / d input|, one batched backward pass for the whole batch.
- `input_x_gradient`: |input * d logit / d input|, the gradient weighted by the pixel values.
- `smoothgrad` (Smilkov et al., 2017): the `gradient` map averaged over noisy copies of each image, the
  noise's standard deviation a fraction `sigma` of that image's value range.

The class is each image's predicted one unless a target is given. The model runs in eval mode so the
images of a batch do not influence each other; a module that cannot switch modes (the `.module()` of a
torch.export program) is used as exported. `saliency` also returns the logits of the un-noised images from
the same forward pass, so callers need no second forward. The classes mirror Captum's `attribute` API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

METHODS = ("gradient", "input_x_gradient", "smoothgrad")

Target = int | torch.Tensor | None


def saliency(
    model: nn.Module,
    images: torch.Tensor,
    method: str = "gradient",
    target: Target = None,
    **options: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(saliency [N, H, W] float32, logits [N, K] float32 of the un-noised images) for normalised images.

    `options` are the method's settings: `n_samples`, `sigma` and `generator` for smoothgrad, none otherwise.
    """
    if method not in METHODS:
        raise ValueError(f"unknown saliency method {method!r}; choose one of {', '.join(METHODS)}")
    allowed = {"n_samples", "sigma", "generator"} if method == "smoothgrad" else set()
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown option(s) for {method}: {', '.join(unknown)}"
                         + (f" (it takes {', '.join(sorted(allowed))})" if allowed else " (it takes none)"))
    _check_images(images)
    if method == "smoothgrad":
        return _smoothgrad(model, images, target, **options)
    grad, logits = input_gradient(model, images, target)
    weighted = grad * images if method == "input_x_gradient" else grad
    return per_pixel(weighted), logits


def input_gradient(model: nn.Module, images: torch.Tensor, target: Target = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(d logit[target] / d images [N, C, H, W], logits [N, K] float32): one forward and one batched backward.

    The raw gradient is what `erase_from_gradient` takes, reducing it over channels inside the kernel.
    """
    _check_images(images)
    with _eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        inputs = (images.clone() if images.is_inference() else images).detach().requires_grad_(True)
        logits = model(inputs)
        classes = _classes(target, logits)
        (grad,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), inputs)
    return grad, logits.detach().float()


class Gradient:
    """Captum-style: `Gradient(model).attribute(inputs, target=None)` -> max over channels of |gradient|."""

    method = "gradient"

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def attribute(self, inputs: torch.Tensor, target: Target = None) -> torch.Tensor:
        """[N, H, W] float32 saliency of `inputs` [N, C, H, W] for `target` (default: the predicted class)."""
        return saliency(self.model, inputs, self.method, target)[0]


class InputXGradient(Gradient):
    """Captum-style: max over channels of |input * gradient|."""

    method = "input_x_gradient"


class SmoothGrad:
    """Captum-style: the gradient map averaged over `n_samples` noisy copies (noise sd = sigma * value range)."""

    def __init__(self, model: nn.Module, n_samples: int = 16, sigma: float = 0.15,
                 generator: torch.Generator | None = None) -> None:
        self.model = model
        self.options = {"n_samples": n_samples, "sigma": sigma, "generator": generator}

    def attribute(self, inputs: torch.Tensor, target: Target = None) -> torch.Tensor:
        """[N, H, W] float32 saliency of `inputs` [N, C, H, W] for `target` (default: the predicted class)."""
        return saliency(self.model, inputs, "smoothgrad", target, **self.options)[0]


def _smoothgrad(
    model: nn.Module,
    images: torch.Tensor,
    target: Target,
    n_samples: int = 16,
    sigma: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One clean forward for the logits and classes, then one batched forward+backward per noisy copy."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    if not 0 <= sigma < float("inf"):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    with _eval_mode(model), torch.no_grad():
        logits = model(images).float()
    classes = _classes(target, logits)
    value_range = images.amax(dim=(1, 2, 3), keepdim=True) - images.amin(dim=(1, 2, 3), keepdim=True)
    noise_sd = sigma * value_range
    total = torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.float32, device=images.device)
    for _ in range(n_samples):
        noise = torch.randn(images.shape, generator=generator, dtype=images.dtype, device=images.device)
        grad, _ = input_gradient(model, images + noise * noise_sd, classes)
        total += per_pixel(grad)
    return total / n_samples, logits


def per_pixel(attribution: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, H, W] float32: the largest magnitude over channels (of a raw gradient: its map)."""
    return attribution.detach().abs().amax(dim=1).float()


def _classes(target: Target, logits: torch.Tensor) -> torch.Tensor:
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


def _check_images(images: torch.Tensor) -> None:
    """Saliency needs a floating [N, C, H, W] batch."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a floating-point [N, C, H, W] tensor, got {shape}")


@contextmanager
def _eval_mode(model: Callable[..., torch.Tensor]) -> Iterator[None]:
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
