"""miscause.kernels: saliency maps and the fused top-p% box-erasure op (PyTorch reference and Triton kernel).

`saliency(model, images, method, target)` ranks pixels; `erase(images, saliency, top_percent, box, fill)`
blanks a box around each image's top pixels; `erase_from_gradient` does the same from the raw gradient of
`input_gradient`. See docs/kernels.md.
"""

from miscause.kernels.dispatch import erase, erase_from_gradient
from miscause.kernels.erase_spec import anchor_count
from miscause.kernels.reference import erase_from_gradient_reference, erase_reference
from miscause.kernels.saliency import (
    METHODS,
    Gradient,
    InputXGradient,
    SmoothGrad,
    input_gradient,
    per_pixel,
    saliency,
)
from miscause.kernels.triton_erase import erase_from_gradient_triton, erase_triton

__all__ = [
    "METHODS",
    "Gradient",
    "InputXGradient",
    "SmoothGrad",
    "anchor_count",
    "erase",
    "erase_from_gradient",
    "erase_from_gradient_reference",
    "erase_from_gradient_triton",
    "erase_reference",
    "erase_triton",
    "input_gradient",
    "per_pixel",
    "saliency",
]
