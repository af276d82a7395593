"""The Triton erasure kernel against the PyTorch reference, element for element, on fresh random inputs.

Runs on a GPU when there is one, else on CPU tensors under the Triton interpreter. The interpreter must be
chosen before triton is first imported, so on a CPU-only machine `test_kernels_interpreter.py` runs this
file in a child process with TRITON_INTERPRET=1; run directly without either, the file is skipped.
"""

from __future__ import annotations

import os
import random

import pytest
import torch

from miscause import kernels

if not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"):
    pytest.skip("no GPU: runs under the Triton interpreter from test_kernels_interpreter.py "
                "(or set TRITON_INTERPRET=1)", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
POISON_BYTE = 0xA5


def fresh_generator() -> tuple[torch.Generator, int]:
    """A generator with a new seed every run; the seed goes into failure messages."""
    seed = random.SystemRandom().randrange(2**31)
    return torch.Generator().manual_seed(seed), seed


def poisoned_outputs(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Output buffers full of NaN and of a byte that is not a valid bool, so any unwritten element shows."""
    n, _, h, w = images.shape
    erased = torch.full(images.shape, float("nan"), dtype=images.dtype, device=images.device)
    mask = torch.full((n, h, w), POISON_BYTE, dtype=torch.uint8, device=images.device).view(torch.bool)
    return erased, mask


def assert_matches_reference(images: torch.Tensor, saliency: torch.Tensor, top_percent: float, box: int,
                             fill: torch.Tensor | None, context: str, from_gradient: bool = False) -> None:
    """Kernel (into poisoned buffers) and reference agree exactly on the mask and on every output value."""
    images, saliency = images.to(DEVICE), saliency.to(DEVICE)
    out = poisoned_outputs(images)
    if from_gradient:
        erased, mask = kernels.erase_from_gradient_triton(images, saliency, top_percent, box, fill, out=out)
        want_erased, want_mask = kernels.erase_from_gradient_reference(images, saliency, top_percent, box, fill)
    else:
        erased, mask = kernels.erase_triton(images, saliency, top_percent, box, fill, out=out)
        want_erased, want_mask = kernels.erase_reference(images, saliency, top_percent, box, fill)
    assert erased.data_ptr() == out[0].data_ptr() and mask.data_ptr() == out[1].data_ptr(), context
    mask_bytes = mask.view(torch.uint8)
    assert bool(((mask_bytes == 0) | (mask_bytes == 1)).all()), f"mask not fully written: {context}"
    assert torch.equal(mask, want_mask), f"mask differs: {context}"
    assert torch.equal(erased, want_erased), f"erased images differ: {context}"


SMALL_SHAPES = [(3, 3, 32, 32), (2, 3, 5, 7), (2, 1, 1, 1), (1, 2, 40, 9), (2, 3, 50, 70)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SMALL_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference_on_every_setting(shape: tuple[int, int, int, int], dtype: torch.dtype) -> None:
    generator, seed = fresh_generator()
    n, c, h, w = shape
    for top_percent in (0.1, 5, 50, 100):
        for box in (1, 3, 5):
            images = torch.randn(shape, generator=generator).to(dtype)
            saliency = torch.randn((n, h, w), generator=generator).to(dtype)
            fill = torch.randn(c, generator=generator)
            assert_matches_reference(images, saliency, top_percent, box, fill,
                                     f"seed {seed}, p={top_percent}, box={box}")


@pytest.mark.parametrize(("dtype", "top_percent", "box"), [
    (torch.float32, 5, 3), (torch.bfloat16, 0.1, 5), (torch.float16, 50, 1), (torch.float32, 100, 5),
], ids=str)
def test_matches_reference_at_224(dtype: torch.dtype, top_percent: float, box: int) -> None:
    generator, seed = fresh_generator()
    images = torch.randn((2, 3, 224, 224), generator=generator).to(dtype)
    saliency = torch.randn((2, 224, 224), generator=generator).to(dtype)
    assert_matches_reference(images, saliency, top_percent, box, None, f"seed {seed}")


@pytest.mark.parametrize("kind", ["constant", "three_values", "signed_zeros"])
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 3, 64, 80)], ids=lambda s: "x".join(map(str, s)))
def test_ties_go_to_the_smaller_index(kind: str, shape: tuple[int, int, int, int]) -> None:
    generator, seed = fresh_generator()
    n, _, h, w = shape
    if kind == "constant":
        saliency = torch.full((n, h, w), -1.5)
    elif kind == "three_values":
        saliency = torch.randint(0, 3, (n, h, w), generator=generator).float()
    else:
        signs = torch.randint(0, 2, (n, h, w), generator=generator).bool()
        saliency = torch.where(signs, torch.tensor(-0.0), torch.tensor(0.0))
    images = torch.randn(shape, generator=generator)
    for top_percent, box in ((5, 3), (50, 1), (0.1, 5)):
        assert_matches_reference(images, saliency, top_percent, box, None,
                                 f"seed {seed}, p={top_percent}, box={box}")


def test_ties_at_224_cut_inside_a_later_block() -> None:
    generator, seed = fresh_generator()
    saliency = torch.randint(0, 2, (2, 224, 224), generator=generator).float()
    images = torch.randn((2, 3, 224, 224), generator=generator).to(torch.bfloat16)
    assert_matches_reference(images, saliency, 30, 3, None, f"seed {seed}")


def test_anchors_on_every_border() -> None:
    saliency = torch.zeros(1, 9, 11)
    for y, x in [(0, 0), (0, 10), (8, 0), (8, 10), (0, 5), (4, 0), (8, 5), (4, 10)]:
        saliency[0, y, x] = 1.0
    images = torch.randn(1, 3, 9, 11)
    for box in (1, 3, 5, 7):
        assert_matches_reference(images, saliency, 8, box, torch.tensor([1.0, 2.0, 3.0]), f"box={box}")


def test_boxes_wider_than_the_image() -> None:
    generator, seed = fresh_generator()
    images = torch.randn((2, 3, 6, 5), generator=generator)
    saliency = torch.randn((2, 6, 5), generator=generator)
    for box in (7, 13, 1001):
        assert_matches_reference(images, saliency, 0.1, box, None, f"seed {seed}, box={box}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_from_gradient_reduces_channels_inside(dtype: torch.dtype) -> None:
    generator, seed = fresh_generator()
    for gradient_channels, (h, w) in ((1, (32, 32)), (4, (45, 33))):
        images = torch.randn((2, 3, h, w), generator=generator).to(dtype)
        gradient = torch.randn((2, gradient_channels, h, w), generator=generator).to(dtype)
        assert_matches_reference(images, gradient, 5, 3, None, f"seed {seed}, C'={gradient_channels}",
                                 from_gradient=True)


def test_nonfinite_values_raise() -> None:
    images = torch.zeros(3, 3, 8, 8, device=DEVICE)
    saliency = torch.zeros(3, 8, 8, device=DEVICE)
    saliency[1, 2, 3] = float("nan")
    saliency[2, 7, 7] = float("-inf")
    with pytest.raises(ValueError, match="saliency contains NaN or Inf in 2 image"):
        kernels.erase_triton(images, saliency, 5, 3)
    gradient = torch.zeros(3, 2, 8, 8, device=DEVICE)
    gradient[0, 1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="gradient contains NaN or Inf in 1 image"):
        kernels.erase_from_gradient_triton(images, gradient, 5, 3)
    gradient[0, 1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="gradient contains NaN or Inf in 1 image"):
        kernels.erase_from_gradient_triton(images, gradient, 5, 3)


def test_non_contiguous_inputs_and_bad_outputs() -> None:
    generator, seed = fresh_generator()
    images = torch.randn((2, 8, 8, 3), generator=generator).permute(0, 3, 1, 2)
    saliency = torch.randn((2, 8, 8), generator=generator).transpose(1, 2)
    assert_matches_reference(images, saliency, 10, 3, None, f"seed {seed}")
    with pytest.raises(ValueError, match="out"):
        kernels.erase_triton(images.to(DEVICE), saliency.to(DEVICE), 10, 3,
                             out=(torch.empty(2, 3, 8, 8, device=DEVICE), torch.empty(2, 8, 8, device=DEVICE)))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_images_on_a_device_other_than_the_current_one() -> None:
    generator, seed = fresh_generator()
    images = torch.randn((4, 3, 32, 32), generator=generator).to("cuda:1")
    saliency = torch.randn((4, 32, 32), generator=generator).to("cuda:1")
    with torch.cuda.device(0):
        erased, mask = kernels.erase_triton(images, saliency, 5, 3)
        want_erased, want_mask = kernels.erase_reference(images, saliency, 5, 3)
    assert erased.device == images.device and torch.equal(mask, want_mask), f"seed {seed}"
    assert torch.equal(erased, want_erased), f"seed {seed}"
