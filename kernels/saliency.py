"""Saliency maps: which pixels a class logit depends on most, one float32 value per pixel ([N, H, W]).

Five methods; the gradient-based ones reduce their [N, C, H, W] attribution by the maximum magnitude over
channels:

- `gradient` (Simonyan et al., 2014): |d logit / d input|, one batched backward pass for the whole batch.
- `input_x_gradient`: |input * d logit / d input|, the gradient weighted by the pixel values.
- `smoothgrad` (Smilkov et al., 2017): the `gradient` map averaged over noisy copies of each image, the
  noise's standard deviation a fraction `sigma` of that image's value range.
- `integrated_gradients` (Sundararajan et al., 2017): the gradient integrated from a baseline image to the
  image, times their difference (`miscause.kernels.integrated_gradients`).
- `grad_cam` (Selvaraju et al., 2017): a convolutional layer's features weighted by their mean gradient,
  upsampled to the input (`miscause.kernels.grad_cam`); it needs the option `layer`.

The class is each image's predicted one unless a target is given. The model runs in eval mode so the
images of a batch do not influence each other; a module that cannot switch modes (the `.module()` of a
torch.export program) is used as exported. `saliency` also returns the logits of the un-noised images, so
callers need no second forward.
"""

from __future__ import annotations

import torch
from torch import nn

from miscause.grad_cam_layers import GRAD_CAM
from miscause.kernels.grad_cam import grad_cam
from miscause.kernels.gradients import Target, check_images, classes_of, clean_logits, input_gradient, per_pixel
from miscause.kernels.integrated_gradients import integrated_gradients

_OPTIONS: dict[str, tuple[str, ...]] = {
    "gradient": (),
    "input_x_gradient": (),
    "smoothgrad": ("n_samples", "sigma", "generator"),
    "integrated_gradients": ("baseline", "n_steps", "integration", "internal_batch_size"),
    GRAD_CAM: ("layer",),
}
METHODS = tuple(_OPTIONS)


def saliency(
    model: nn.Module,
    images: torch.Tensor,
    method: str = "gradient",
    target: Target = None,
    **options: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(saliency [N, H, W] float32, logits [N, K] float32 of the un-noised images) for normalised images.

    `options` are the method's settings (`_OPTIONS[method]`): none for `gradient` and `input_x_gradient`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown saliency method {method!r}; choose one of {', '.join(METHODS)}")
    allowed = _OPTIONS[method]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) for {method}: {', '.join(unknown)}"
                         + (f" (it takes {', '.join(sorted(allowed))})" if allowed else " (it takes none)"))
    check_images(images)
    if method == "smoothgrad":
        return _smoothgrad(model, images, target, **options)
    if method == "integrated_gradients":
        return integrated_gradients(model, images, target, **options)
    if method == GRAD_CAM:
        return grad_cam(model, images, target, **options)
    grad, logits = input_gradient(model, images, target)
    weighted = grad * images if method == "input_x_gradient" else grad
    return per_pixel(weighted), logits


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
    logits = clean_logits(model, images)
    classes = classes_of(target, logits)
    value_range = images.amax(dim=(1, 2, 3), keepdim=True) - images.amin(dim=(1, 2, 3), keepdim=True)
    noise_sd = sigma * value_range
    total = torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.float32, device=images.device)
    for _ in range(n_samples):
        noise = torch.randn(images.shape, generator=generator, dtype=images.dtype, device=images.device)
        grad, _ = input_gradient(model, images + noise * noise_sd, classes)
        total += per_pixel(grad)
    return total / n_samples, logits
