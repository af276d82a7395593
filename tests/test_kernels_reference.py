"""The erasure op's PyTorch reference against a per-pixel transcription of the spec, and its argument checks."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
import torch
from triton.runtime.interpreter import InterpretedFunction

from miscause import kernels
from miscause.kernels import triton_bands

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def fresh_seed() -> int:
    """A new seed every run (reported in failure messages), so repeated runs cover new inputs."""
    return random.SystemRandom().randrange(2**31)


def brute_force_mask(saliency: torch.Tensor, top_percent: float, box: int) -> torch.Tensor:
    """The spec pixel by pixel: rank (value desc, index asc), keep k, mark every pixel within the box."""
    n, h, w = saliency.shape
    k = min(max(math.ceil(Fraction(str(top_percent)) * h * w / 100), 1), h * w)
    half = (box - 1) // 2
    mask = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n):
        values = saliency[i].float().flatten().tolist()
        ranked = sorted(range(h * w), key=lambda p: (-values[p], p))
        anchors = [divmod(p, w) for p in ranked[:k]]
        for y in range(h):
            for x in range(w):
                mask[i, y, x] = any(abs(y - ay) <= half and abs(x - ax) <= half for ay, ax in anchors)
    return mask


def saliency_of(kind: str, shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """Distinct values, heavy ties, one constant value, or zeros of both signs among negatives."""
    if kind == "random":
        return torch.randn(shape, generator=generator)
    if kind == "tied":
        return torch.randint(0, 3, shape, generator=generator).float()
    if kind == "constant":
        return torch.full(shape, 0.25)
    signs = torch.randint(0, 2, shape, generator=generator).bool()
    return torch.where(signs, torch.tensor(-0.0), torch.tensor(0.0)) - torch.randint(0, 2, shape, generator=generator)


@pytest.mark.parametrize("kind", ["random", "tied", "constant", "signed_zeros"])
@pytest.mark.parametrize("shape", [(2, 5, 7), (1, 1, 1), (3, 6, 6), (1, 9, 4)])
def test_reference_matches_per_pixel_spec(kind: str, shape: tuple[int, int, int]) -> None:
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    saliency = saliency_of(kind, shape, generator)
    images = torch.randn(shape[0], 3, *shape[1:], generator=generator)
    fill = torch.randn(3, generator=generator)
    for top_percent in (0.1, 5, 50, 100, 37.5):
        for box in (1, 3, 5):
            erased, mask = kernels.erase(images, saliency, top_percent, box, fill, implementation="reference")
            expected = brute_force_mask(saliency, top_percent, box)
            assert torch.equal(mask, expected), f"seed {seed}, p={top_percent}, box={box}"
            want = torch.where(expected[:, None], fill.view(1, 3, 1, 1), images)
            assert torch.equal(erased, want), f"seed {seed}, p={top_percent}, box={box}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_keeps_dtype_and_rounds_fill_to_it(dtype: torch.dtype) -> None:
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, 8, 8, generator=generator).to(dtype)
    saliency = torch.randn(2, 8, 8, generator=generator).to(dtype)
    erased, mask = kernels.erase(images, saliency, 10, 3, [0.1, -0.2, 0.3], implementation="reference")
    assert erased.dtype == dtype and mask.dtype == torch.bool
    assert torch.equal(mask, brute_force_mask(saliency, 10, 3)), f"seed {seed}"
    fill = torch.tensor([0.1, -0.2, 0.3]).to(dtype).view(1, 3, 1, 1).expand_as(images)
    assert torch.equal(erased[mask[:, None].expand_as(images)], fill[mask[:, None].expand_as(images)])
    assert torch.equal(erased[~mask[:, None].expand_as(images)], images[~mask[:, None].expand_as(images)])


def test_default_fill_is_zero_and_anchors_count_exactly() -> None:
    images = torch.ones(3, 2, 10, 10)
    saliency = torch.rand(3, 10, 10)
    erased, mask = kernels.erase(images, saliency, 5, 1, implementation="reference")
    assert mask.sum(dim=(1, 2)).tolist() == [5, 5, 5]
    assert torch.equal(erased, torch.where(mask[:, None], 0.0, images))


def test_boxes_clip_at_every_border() -> None:
    saliency = torch.zeros(1, 9, 11)
    corners_and_edges = [(0, 0), (0, 10), (8, 0), (8, 10), (0, 5), (4, 0), (8, 5), (4, 10)]
    for y, x in corners_and_edges:
        saliency[0, y, x] = 1.0
    _, mask = kernels.erase(torch.zeros(1, 1, 9, 11), saliency, 8, 3, implementation="reference")
    expected = torch.zeros(1, 9, 11, dtype=torch.bool)
    for y, x in corners_and_edges:
        expected[0, max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = True
    assert torch.equal(mask, expected)


def test_box_larger_than_image_erases_everything() -> None:
    _, mask = kernels.erase(torch.zeros(2, 1, 4, 6), torch.randn(2, 4, 6), 1, 21, implementation="reference")
    assert bool(mask.all())


def test_from_gradient_is_erase_of_max_abs_over_channels() -> None:
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, 12, 9, generator=generator)
    gradient = torch.randn(2, 4, 12, 9, generator=generator)
    got = kernels.erase(images, gradient, 5, 3, from_gradient=True, implementation="reference")
    want = kernels.erase(images, gradient.abs().amax(dim=1), 5, 3, implementation="reference")
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True)), f"seed {seed}"


def test_erase_on_cpu_is_the_reference() -> None:
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, 16, 16, generator=generator)
    saliency = torch.randn(2, 16, 16, generator=generator)
    got, want = kernels.erase(images, saliency, 5, 3), kernels.erase(images, saliency, 5, 3, implementation="reference")
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True)), f"seed {seed}"
    gradient = torch.randn(2, 3, 16, 16, generator=generator)
    got = kernels.erase(images, gradient, 5, 3, from_gradient=True)
    want = kernels.erase(images, gradient, 5, 3, from_gradient=True, implementation="reference")
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True)), f"seed {seed}"


def test_empty_batch() -> None:
    erased, mask = kernels.erase(torch.zeros(0, 3, 4, 4), torch.zeros(0, 4, 4), 5, 3, implementation="reference")
    assert erased.shape == (0, 3, 4, 4) and mask.shape == (0, 4, 4)


@pytest.mark.parametrize(("top_percent", "pixels", "k"), [
    (0.1, 1000, 1), (5, 1024, 52), (5, 1000, 50), (100, 7, 7), (1e-9, 10, 1), (50, 1, 1), (33.3, 3, 1),
    (0.1, 50176, 51), (5, 50176, 2509),
])
def test_anchor_count(top_percent: float, pixels: int, k: int) -> None:
    assert kernels.anchor_count(top_percent, pixels) == k


GOOD = {"images": torch.zeros(2, 3, 4, 5), "ranking": torch.zeros(2, 4, 5), "top_percent": 5, "box": 3}


@pytest.mark.parametrize(("change", "message"), [
    ({"ranking": torch.zeros(2, 5, 4)}, "saliency must have shape"),
    ({"ranking": torch.zeros(1, 4, 5)}, "saliency must have shape"),
    ({"images": torch.zeros(3, 4, 5)}, r"images must be a \[N, C, H, W\] tensor"),
    ({"images": torch.zeros(2, 3, 4, 5, dtype=torch.float64)}, "images must be float32, float16 or bfloat16"),
    ({"ranking": torch.zeros(2, 4, 5, dtype=torch.int64)}, "saliency must be float32"),
    ({"ranking": torch.tensor(float("nan")).expand(2, 4, 5)}, "saliency contains NaN or Inf in 2 image"),
    ({"ranking": torch.tensor([[[float("inf")]], [[0.0]]]).expand(2, 4, 5)}, "NaN or Inf in 1 image"),
    ({"box": 4}, "box must be an odd integer >= 1"),
    ({"box": 0}, "box must be an odd integer >= 1"),
    ({"box": 3.0}, "box must be an odd integer >= 1"),
    ({"top_percent": 0}, r"top_percent must be in \(0, 100\]"),
    ({"top_percent": 100.5}, r"top_percent must be in \(0, 100\]"),
    ({"top_percent": float("nan")}, r"top_percent must be in \(0, 100\]"),
    ({"top_percent": "5"}, "top_percent must be a number"),
    ({"fill": [0.0, 1.0]}, r"fill must have one value per channel \(3\), got 2"),
])
def test_bad_arguments_raise_value_error(change: dict, message: str) -> None:
    args = {**GOOD, **change}
    with pytest.raises(ValueError, match=message):
        kernels.erase(**args)
    with pytest.raises(ValueError, match=message):
        kernels.erase(**args, implementation="reference")


def test_bad_gradient_raises_value_error() -> None:
    images = torch.zeros(2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"gradient must have shape \(N, C', H, W\)"):
        kernels.erase(images, torch.zeros(2, 4, 5), 5, 3, from_gradient=True)
    with pytest.raises(ValueError, match="gradient contains NaN or Inf in 1 image"):
        kernels.erase(images, torch.tensor([[[[0.0]], [[float("nan")]]], [[[0.0]], [[0.0]]]]).expand(2, 2, 4, 5), 5, 3,
                      from_gradient=True)


def test_triton_on_cpu_without_interpreter_says_what_to_use() -> None:
    if isinstance(triton_bands.bands_kernel, InterpretedFunction):
        pytest.skip("the Triton interpreter is active in this process")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        kernels.erase(**GOOD, implementation="triton")


def test_implementation_is_one_of_the_named_and_options_fit_it() -> None:
    with pytest.raises(ValueError, match="implementation must be one of reference, triton, packed, bands, split"):
        kernels.erase(**GOOD, implementation="eager")
    with pytest.raises(ValueError, match="out and debug are options of the Triton kernels"):
        kernels.erase_unchecked(**GOOD, implementation="reference", debug=True)
    with pytest.raises(ValueError, match="out and debug are options of the Triton kernels"):
        kernels.erase(**GOOD, out=(torch.empty(2, 3, 4, 5), torch.empty(2, 4, 5, dtype=torch.bool)))
    assert kernels.IMPLEMENTATIONS == ("reference", "triton", "packed", "bands", "split")


def test_unchecked_erasures_report_their_status_and_are_checked_together() -> None:
    generator = torch.Generator().manual_seed(5)
    images = torch.randn((3, 3, 8, 8), generator=generator)
    saliency = torch.randn((3, 8, 8), generator=generator)
    saliency[1, 2, 2], saliency[1, 3, 3] = float("inf"), float("nan")
    clean = kernels.erase_unchecked(images, torch.randn((3, 8, 8), generator=generator), 5, 3)
    bad = kernels.erase_unchecked(images, saliency, 5, 3)
    assert clean.k == 4 and clean.anchors.tolist() == [4, 4, 4] and clean.nonfinite.tolist() == [0, 0, 0]
    assert bad.nonfinite.tolist() == [0, 2, 0]
    kernels.check_result(clean)
    with pytest.raises(ValueError, match=r"^saliency contains NaN or Inf in 1 image\(s\)"):
        kernels.check_result(clean, bad)
    with pytest.raises(RuntimeError, match=r"other than 4 anchors in 3 image\(s\)"):
        kernels.check_result(clean._replace(anchors=clean.anchors + 1))
    gradient = torch.randn((3, 2, 8, 8), generator=generator)
    from_gradient = kernels.erase_unchecked(images, gradient, 5, 3, from_gradient=True)
    assert from_gradient.name == "gradient"
    for got, want in zip(from_gradient[:2], kernels.erase(images, gradient, 5, 3, from_gradient=True), strict=True):
        assert torch.equal(got, want)
