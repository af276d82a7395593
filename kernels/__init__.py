"""miscause.kernels: saliency maps and the fused top-p% box-erasure op (PyTorch reference and Triton kernels).

`saliency(model, images, method, target, **options)` ranks pixels (one of `METHODS`); `input_gradient` gives
the raw gradient and `per_pixel` its map; `clean_logits` the logits without gradients.
`erase(images, ranking, top_percent, box, fill)` blanks a box around each image's top pixels, ranked by a
saliency map or (`from_gradient=True`) a raw gradient; `erase_unchecked` leaves the NaN/Inf and anchor-count
check to `check_result`, once for several erasures. Both run the Triton kernels on CUDA tensors and the
reference elsewhere, or the implementation named (`implementation=`, one of `IMPLEMENTATIONS`). See
docs/kernels.md.
"""

from miscause.kernels.dispatch import IMPLEMENTATIONS, erase, erase_unchecked
from miscause.kernels.erase_spec import EraseResult, anchor_count, check_result
from miscause.kernels.gradients import Target, clean_logits, input_gradient, per_pixel
from miscause.kernels.saliency import METHODS, saliency

__all__ = [
    "IMPLEMENTATIONS",
    "METHODS",
    "EraseResult",
    "Target",
    "anchor_count",
    "check_result",
    "clean_logits",
    "erase",
    "erase_unchecked",
    "input_gradient",
    "per_pixel",
    "saliency",
]
