"""miscause.kernels: saliency maps and the fused top-p% box-erasure op (PyTorch reference and Triton kernel).

`saliency(model, images, method, target, **options)` ranks pixels (one of `METHODS`);
`erase(images, saliency, top_percent, box, fill)` blanks a box around each image's top pixels;
`erase_from_gradient` does the same from the raw gradient of `input_gradient`; `erase_unchecked` leaves the
NaN/Inf and anchor-count check to `check_result`, once for several erasures. See docs/kernels.md.
"""

from miscause.kernels.dispatch import erase, erase_from_gradient, erase_unchecked
from miscause.kernels.erase_spec import EraseResult, anchor_count, check_result
from miscause.kernels.grad_cam import locate
from miscause.kernels.gradients import input_gradient, per_pixel
from miscause.kernels.reference import erase_from_gradient_reference, erase_reference
from miscause.kernels.saliency import (
    METHODS,
    OPTIONS,
    GradCam,
    Gradient,
    InputXGradient,
    IntegratedGradients,
    SmoothGrad,
    saliency,
)
from miscause.kernels.triton_erase import erase_from_gradient_triton, erase_triton

__all__ = [
    "EraseResult",
    "METHODS",
    "OPTIONS",
    "GradCam",
    "Gradient",
    "InputXGradient",
    "IntegratedGradients",
    "SmoothGrad",
    "anchor_count",
    "check_result",
    "erase",
    "erase_from_gradient",
    "erase_from_gradient_reference",
    "erase_from_gradient_triton",
    "erase_reference",
    "erase_triton",
    "erase_unchecked",
    "input_gradient",
    "locate",
    "per_pixel",
    "saliency",
]
