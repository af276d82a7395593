"""The Triton erasure kernels against the PyTorch reference, element for element, on fresh random inputs.

Runs on a GPU when there is one, else on CPU tensors under the Triton interpreter. The interpreter must be
chosen before triton is first imported, so on a CPU-only machine `test_kernels_interpreter.py` runs this
file in a child process with TRITON_INTERPRET=1; run directly without either, the file is skipped. Every
comparison also checks the per-image status the kernel writes (no NaN/Inf seen, exactly k anchors), with the
kernels' device assertions compiled in (and, under the interpreter, switched on).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from miscause import kernels
from miscause.kernels import erase_spec
from miscause.kernels.triton_erase import variant_for
from miscause.kernels.triton_shared import KEY_BITS, split_config

# Internal: the split kernel's selection state (pass histograms, threshold, cut), which no entry point returns.
from miscause.kernels.triton_split import _split_select as split_select_internal

if not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"):
    pytest.skip("no GPU: runs under the Triton interpreter from test_kernels_interpreter.py "
                "(or set TRITON_INTERPRET=1)", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
POISON_BYTE = 0xA5
EXACTNESS_SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu" / "exactness.py"


@pytest.fixture(autouse=True)
def live_device_assertions(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Under the interpreter, make tl.device_assert check: it only does with debug on, as a GPU build with it."""
    if DEVICE == "cpu":
        from triton.runtime.interpreter import interpreter_builder

        monkeypatch.setattr(interpreter_builder, "options",
                            dataclasses.replace(interpreter_builder.options, debug=True))
    yield


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
                             fill: torch.Tensor | None, context: str, from_gradient: bool = False,
                             variant: str | None = None) -> None:
    """Kernel (into poisoned buffers) and reference agree exactly on the mask and on every output value.

    `variant` forces a kernel (default: the one chosen for the size); its status must say: finite, k anchors.
    """
    images, saliency = images.to(DEVICE), saliency.to(DEVICE)
    out = poisoned_outputs(images)
    context = f"{context}, {variant or variant_for(*images.shape[2:])} kernel"
    result = kernels.erase_unchecked(images, saliency, top_percent, box, fill, from_gradient=from_gradient,
                                     implementation=variant or "triton", out=out, debug=True)
    want_erased, want_mask = kernels.erase(images, saliency, top_percent, box, fill, from_gradient=from_gradient,
                                           implementation="reference")
    erased, mask = result.erased, result.mask
    assert erased.data_ptr() == out[0].data_ptr() and mask.data_ptr() == out[1].data_ptr(), context
    k = kernels.anchor_count(top_percent, images.shape[2] * images.shape[3])
    assert result.k == k and result.anchors.tolist() == [k] * len(images), f"anchor counts: {context}"
    assert result.nonfinite.tolist() == [0] * len(images), f"non-finite flags: {context}"
    kernels.check_result(result)
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


@pytest.mark.parametrize("variant", ["bands", "split"])
@pytest.mark.parametrize(("dtype", "top_percent", "box"), [
    (torch.float32, 5, 3), (torch.bfloat16, 0.1, 5), (torch.float16, 50, 1), (torch.float32, 100, 5),
], ids=str)
def test_matches_reference_at_224(dtype: torch.dtype, top_percent: float, box: int, variant: str) -> None:
    generator, seed = fresh_generator()
    images = torch.randn((2, 3, 224, 224), generator=generator).to(dtype)
    saliency = torch.randn((2, 224, 224), generator=generator).to(dtype)
    assert_matches_reference(images, saliency, top_percent, box, None, f"seed {seed}", variant=variant)


@pytest.mark.parametrize("kind", ["constant", "three_values", "signed_zeros", "subnormals"])
@pytest.mark.parametrize(("shape", "variant"), [((2, 3, 32, 32), "packed"), ((2, 3, 32, 32), "bands"),
                                                ((1, 3, 64, 80), "bands"), ((2, 3, 32, 32), "split"),
                                                ((1, 3, 64, 80), "split")], ids=str)
def test_ties_go_to_the_smaller_index(kind: str, shape: tuple[int, int, int, int], variant: str) -> None:
    """Subnormals: keys that differ only in their low bits, tied at the smallest ones and at +-0."""
    generator, seed = fresh_generator()
    n, _, h, w = shape
    if kind == "constant":
        saliency = torch.full((n, h, w), -1.5)
    elif kind == "three_values":
        saliency = torch.randint(0, 3, (n, h, w), generator=generator).float()
    elif kind == "signed_zeros":
        signs = torch.randint(0, 2, (n, h, w), generator=generator).bool()
        saliency = torch.where(signs, torch.tensor(-0.0), torch.tensor(0.0))
    else:
        values = torch.tensor([0.0, -0.0, 1e-45, -1e-45, 3e-45, 1e-40, -1e-40])
        saliency = values[torch.randint(0, len(values), (n, h, w), generator=generator)]
    images = torch.randn(shape, generator=generator)
    for top_percent, box in ((5, 3), (50, 1), (0.1, 5)):
        assert_matches_reference(images, saliency, top_percent, box, None,
                                 f"seed {seed}, p={top_percent}, box={box}", variant=variant)


# Bit patterns of 1.0 per dtype: adding i gives the i-th representable value above it.
ONE_BITS = {torch.float32: (torch.int32, 0x3F800000), torch.float16: (torch.int16, 0x3C00),
            torch.bfloat16: (torch.int16, 0x3F80)}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("variant", ["packed", "bands", "split"])
def test_selection_exits_early_exactly(dtype: torch.dtype, variant: str) -> None:
    """Shortened searches stay exact: negative keys (whose unsearched low bits are ones), keys one representable
    step apart (the search cannot stop before its last bit), and blocks where only some images can stop early."""
    generator, seed = fresh_generator()
    n, h, w = 4, 32, 32
    bits, one = ONE_BITS[dtype]
    steps = torch.stack([torch.randperm(h * w, generator=generator) for _ in range(2)])
    ladder = (one + steps).to(bits).view(dtype).reshape(2, h, w)
    mixed = torch.cat([ladder, torch.randn((2, h, w), generator=generator).to(dtype)])
    negative = -torch.randn((n, h, w), generator=generator).abs().to(dtype)
    images = torch.randn((n, 3, h, w), generator=generator)
    for name, saliency in (("negative", negative), ("ladder", mixed), ("negative ladder", -mixed)):
        for top_percent in (5, 50):
            assert_matches_reference(images, saliency, top_percent, 3, None,
                                     f"seed {seed}, {name}, p={top_percent}", variant=variant)


def order_key(value: float) -> int:
    """The kernels' uint32 key of a float32 value."""
    bits = struct.unpack("<I", struct.pack("<f", value))[0]
    return bits ^ 0xFFFFFFFF if bits >> 31 else bits | 0x80000000


def early_exit_saliency(case: str, n: int, h: int, w: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """Saliency whose radix selection stops early: at a bin holding exactly k, or at the dtype's last key bit.

    first_byte: k values in [2, 7.5), one bin of the first key byte, the rest in [0, 1). second_byte: k values
    in [7, 7.03), one bin of the second byte, the rest in [2, 6.5), all in that first-byte bin. bfloat16 and
    float16: 1 + j / 2^m for j the index modulo 2^m (m mantissa bits), so every level holds many ties.
    """
    plane = h * w
    if case in ("bfloat16", "float16"):
        bits = 7 if case == "bfloat16" else 10
        levels = 1 + (torch.arange(plane) % 2**bits) / 2**bits
        return levels.to(getattr(torch, case)).repeat(n, 1).view(n, h, w)
    (low, high), (rest_low, rest_high) = ((2.0, 7.5), (0.0, 1.0)) if case == "first_byte" else ((7.0, 7.03), (2.0, 6.5))
    values = rest_low + (rest_high - rest_low) * torch.rand((n, plane), generator=generator)
    top = low + (high - low) * torch.rand((n, k), generator=generator)
    values.scatter_(1, torch.rand((n, plane), generator=generator).argsort(dim=1)[:, :k], top)
    return values.view(n, h, w)


@pytest.mark.parametrize(("case", "passes", "threshold", "cut"), [
    ("first_byte", 1, 0xC0000000, None), ("second_byte", 2, 0xC0E00000, None),
    ("bfloat16", 2, order_key(1 + 121 / 128), 121 + 23 * 128 + 1), ("float16", 3, order_key(1 + 969 / 1024),
                                                                     969 + 5 * 1024 + 1),
], ids=str)
def test_radix_selection_stops_early(case: str, passes: int, threshold: int, cut: int | None) -> None:
    """The split kernel's pass histograms show which passes ran; both band kernels match the reference.

    A bin with exactly the anchors still needed ends selection with its prefix as threshold and no cut (cut =
    the plane); bfloat16 and float16 keys are searched over two and three bytes, then ties are cut (at 96x80
    and p=5, k=384: the 24th of 60 ties at level 121 of 128, and the 6th of 7 at level 969 of 1024).
    """
    generator, seed = fresh_generator()
    n, h, w = 2, 96, 80
    k = kernels.anchor_count(5, h * w)
    saliency = early_exit_saliency(case, n, h, w, k, generator).to(DEVICE)
    config = split_config(h, w)
    nonfinite, anchors = torch.empty((2, n), dtype=torch.int32, device=DEVICE)
    counters, state = split_select_internal(saliency, nonfinite, anchors, 1, h, w, k, FROM_GRADIENT=False,
                                   KEY_BITS=KEY_BITS[saliency.dtype], DEBUG=True, SLICE=config["SLICE"],
                                   SLICES=config["SLICES"], BLOCK=config["BLOCK"], num_warps=config["num_warps"])
    ran = (counters[:, :4 * 256].view(n, 4, 256).sum(dim=2) > 0).tolist()
    assert ran == [[byte < passes for byte in range(4)]] * n, f"seed {seed}: passes run {ran}"
    assert [key & 0xFFFFFFFF for key in state[:, 0].tolist()] == [threshold] * n, f"seed {seed}: thresholds"
    assert state[:, 1].tolist() == [cut or h * w] * n and nonfinite.tolist() == [0] * n, f"seed {seed}"
    images = torch.randn((n, 3, h, w), generator=generator)
    for variant in ("bands", "split"):
        assert_matches_reference(images, saliency, 5, 3, None, f"seed {seed}", variant=variant)


@pytest.mark.parametrize("variant", ["bands", "split"])
def test_ties_at_224_cut_inside_a_later_block(variant: str) -> None:
    """About 60% into the ties: a later selection tile, and for the split kernel a later slice."""
    generator, seed = fresh_generator()
    saliency = torch.randint(0, 2, (2, 224, 224), generator=generator).float()
    images = torch.randn((2, 3, 224, 224), generator=generator).to(torch.bfloat16)
    assert_matches_reference(images, saliency, 30, 3, None, f"seed {seed}", variant=variant)


@pytest.mark.parametrize(("variant", "height", "width"), [("packed", 9, 11), ("bands", 9, 11), ("split", 9, 11),
                                                        ("split", 70, 66)], ids=str)
def test_anchors_on_every_border(variant: str, height: int, width: int) -> None:
    """At 70x66 the split kernel's border anchors lie in different slices and bands."""
    saliency = torch.zeros(1, height, width)
    bottom, right, middle_y, middle_x = height - 1, width - 1, height // 2, width // 2
    for y, x in [(0, 0), (0, right), (bottom, 0), (bottom, right), (0, middle_x), (middle_y, 0), (bottom, middle_x),
                 (middle_y, right)]:
        saliency[0, y, x] = 1.0
    images = torch.randn(1, 3, height, width)
    for box in (1, 3, 5, 7):
        assert_matches_reference(images, saliency, 799 / (height * width), box, torch.tensor([1.0, 2.0, 3.0]),
                                 f"box={box}", variant=variant)


@pytest.mark.parametrize(("variant", "shape"), [("packed", (2, 3, 6, 5)), ("bands", (2, 3, 6, 5)),
                                                ("split", (2, 3, 6, 5)), ("bands", (1, 3, 40, 70)),
                                                ("split", (1, 3, 40, 70))], ids=str)
def test_boxes_wider_than_the_image(variant: str, shape: tuple[int, int, int, int]) -> None:
    """At 40x70 a box reaches over several bands, above and below."""
    generator, seed = fresh_generator()
    n, _, h, w = shape
    images = torch.randn(shape, generator=generator)
    saliency = torch.randn((n, h, w), generator=generator)
    for box in (7, 13, 1001):
        assert_matches_reference(images, saliency, 0.1, box, None, f"seed {seed}, box={box}", variant=variant)


@pytest.mark.parametrize("variant", ["packed", "bands", "split"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_from_gradient_reduces_channels_inside(dtype: torch.dtype, variant: str) -> None:
    generator, seed = fresh_generator()
    for gradient_channels, (h, w) in ((1, (32, 32)), (4, (45, 33))):
        images = torch.randn((2, 3, h, w), generator=generator).to(dtype)
        gradient = torch.randn((2, gradient_channels, h, w), generator=generator).to(dtype)
        assert_matches_reference(images, gradient, 5, 3, None, f"seed {seed}, C'={gradient_channels}",
                                 from_gradient=True, variant=variant)


@pytest.mark.parametrize("variant", ["packed", "bands", "split"])
def test_nonfinite_values_are_flagged_per_image(variant: str) -> None:
    images = torch.zeros(3, 3, 8, 8, device=DEVICE)
    saliency = torch.zeros(3, 8, 8, device=DEVICE)
    saliency[1, 2, 3] = float("nan")
    saliency[2, 7, 7] = float("-inf")
    saliency[2, 0, 0] = float("inf")
    result = kernels.erase_unchecked(images, saliency, 5, 3, implementation=variant)
    assert result.nonfinite.tolist() == [0, 1, 2] and result.anchors.tolist() == [result.k] * 3
    with pytest.raises(ValueError, match="saliency contains NaN or Inf in 2 image"):
        kernels.check_result(result)


def test_nonfinite_values_raise() -> None:
    images = torch.zeros(3, 3, 8, 8, device=DEVICE)
    saliency = torch.zeros(3, 8, 8, device=DEVICE)
    saliency[1, 2, 3] = float("nan")
    saliency[2, 7, 7] = float("-inf")
    with pytest.raises(ValueError, match="saliency contains NaN or Inf in 2 image"):
        kernels.erase(images, saliency, 5, 3, implementation="triton")
    gradient = torch.zeros(3, 2, 8, 8, device=DEVICE)
    gradient[0, 1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="gradient contains NaN or Inf in 1 image"):
        kernels.erase(images, gradient, 5, 3, from_gradient=True, implementation="triton")
    gradient[0, 1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="gradient contains NaN or Inf in 1 image"):
        kernels.erase(images, gradient, 5, 3, from_gradient=True, implementation="triton")


def test_non_contiguous_inputs_and_bad_outputs() -> None:
    generator, seed = fresh_generator()
    images = torch.randn((2, 8, 8, 3), generator=generator).permute(0, 3, 1, 2)
    saliency = torch.randn((2, 8, 8), generator=generator).transpose(1, 2)
    assert_matches_reference(images, saliency, 10, 3, None, f"seed {seed}")
    with pytest.raises(ValueError, match="out"):
        kernels.erase(images.to(DEVICE), saliency.to(DEVICE), 10, 3, implementation="triton",
                      out=(torch.empty(2, 3, 8, 8, device=DEVICE), torch.empty(2, 8, 8, device=DEVICE)))



@pytest.mark.parametrize("variant", ["bands", "split"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 3, 32, 32), (2, 3, 5, 7), (2, 1, 1, 1), (1, 2, 40, 9)],
                         ids=lambda s: "x".join(map(str, s)))
def test_band_kernels_on_small_images(shape: tuple[int, int, int, int], dtype: torch.dtype, variant: str) -> None:
    generator, seed = fresh_generator()
    n, c, h, w = shape
    for top_percent, box in ((5, 3), (50, 5)):
        images = torch.randn(shape, generator=generator).to(dtype)
        saliency = torch.randn((n, h, w), generator=generator).to(dtype)
        assert_matches_reference(images, saliency, top_percent, box, torch.randn(c, generator=generator),
                                 f"seed {seed}, p={top_percent}, box={box}", variant=variant)


@pytest.mark.parametrize("shape", [(5, 3, 32, 32), (2, 2, 64, 64), (3, 3, 33, 64), (9, 1, 3, 64), (2, 3, 64, 5)],
                         ids=lambda s: "x".join(map(str, s)))
def test_packed_kernel_at_its_limits(shape: tuple[int, int, int, int]) -> None:
    """Part-filled last programs, 64-bit row and column words, padded sides, boxes past the 32-bit word."""
    generator, seed = fresh_generator()
    n, c, h, w = shape
    for top_percent, box in ((5, 3), (0.1, 67), (30, 41)):
        images = torch.randn(shape, generator=generator).to(torch.bfloat16)
        saliency = torch.randn((n, h, w), generator=generator)
        assert_matches_reference(images, saliency, top_percent, box, None,
                                 f"seed {seed}, p={top_percent}, box={box}", variant="packed")
    gradient = torch.randn((n, 2, h, w), generator=generator)
    assert_matches_reference(torch.randn(shape, generator=generator), gradient, 5, 3, None, f"seed {seed}",
                             from_gradient=True, variant="packed")


def test_packed_kernel_refuses_sides_over_64() -> None:
    images, saliency = torch.zeros(1, 1, 65, 8, device=DEVICE), torch.zeros(1, 65, 8, device=DEVICE)
    with pytest.raises(ValueError, match="sides up to 64"):
        kernels.erase_unchecked(images, saliency, 5, 3, implementation="packed")
    with pytest.raises(ValueError, match="implementation must be one of reference, triton, packed, bands, split"):
        kernels.erase_unchecked(images, saliency, 5, 3, implementation="sorted")


@pytest.mark.skipif(DEVICE != "cpu", reason="a failed device assertion ends the CUDA context of the test process")
@pytest.mark.parametrize(("variant", "message"), [("packed", "bisection"), ("bands", "radix select"),
                                                  ("split", "radix select")])
def test_debug_assertions_catch_a_broken_invariant(variant: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With more anchors asked for than there are pixels, no k-th largest key exists: the assertion says so."""
    images, saliency = torch.randn(2, 3, 8, 8), torch.randn(2, 8, 8)
    monkeypatch.setattr(erase_spec, "anchor_count", lambda top_percent, pixels: pixels + 1)
    with pytest.raises(Exception, match=message):
        kernels.erase_unchecked(images, saliency, 5, 3, implementation=variant, debug=True)
    kernels.erase_unchecked(images, saliency, 5, 3, implementation=variant, debug=False)


@pytest.mark.parametrize("size", [32, 70])
def test_benchmark_variants_agree_with_the_reference(size: int) -> None:
    from miscause.benchmarks import kernels as bench

    generator, seed = fresh_generator()
    inputs = bench.make_inputs(4, 3, size, size, torch.bfloat16, torch.device(DEVICE), generator)
    calls = {name: call for name, call in bench.implementations(5, 3, inputs).items()
             if name.startswith("triton") and bench.applies(name, size, size)}
    assert ("triton_packed" in calls) == (size <= 64) and len(calls) >= 4
    assert bench.check(calls, inputs, 5, 3) == [], f"seed {seed}"


def test_exactness_script_at_a_small_scale(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("exactness", EXACTNESS_SCRIPT)
    exactness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exactness)
    assert exactness.main(["--device", DEVICE, "--divide", "35000"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "all cases exact" and sum(line.startswith("OK ") for line in lines) >= 15
