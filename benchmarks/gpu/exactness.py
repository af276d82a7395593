"""The Triton erasure kernels against the PyTorch reference at scale, on a GPU: every element, every image.

    python benchmarks/gpu/exactness.py [--divide D] [--device cuda:N]

Cases: 70,000 images of 32x32 (random, heavily tied, constant), bf16 saliency with fp16 images, subnormal
and signed-zero saliency, the raw-gradient form, and 224x224 images; each kernel that takes the size (the band
and split kernels take any size, the packed kernel sides up to 64). A case passes when the erased images and
the mask equal the reference's and every image reports exactly k anchors and no NaN/Inf. Prints one line per
case and kernel as it finishes (a kernel that fails to compile or launch is reported and the rest still run)
and exits 1 if any failed. `--divide D` runs each case with 1/D of its images (on a CPU, under
TRITON_INTERPRET=1, a large D makes it a smoke test).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch

from miscause.kernels import erase, erase_unchecked
from miscause.kernels.triton_erase import variant_for

Maker = Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def normal(n: int, h: int, w: int, images: torch.dtype, ranking: torch.dtype, channels: int = 0) -> Maker:
    """Normal images and ranking input ([N, H, W], or [N, channels, H, W] for a raw gradient)."""
    shape = (n, channels, h, w) if channels else (n, h, w)
    return lambda g: (torch.randn((n, 3, h, w), generator=g).to(images), torch.randn(shape, generator=g).to(ranking))


def tied(n: int, h: int, w: int, levels: int) -> Maker:
    """Saliency with only `levels` distinct values (1: constant), so ties decide most anchors."""
    return lambda g: (torch.randn((n, 3, h, w), generator=g),
                      torch.randint(0, levels, (n, h, w), generator=g).float() * 0.25 - 0.5)


def tiny(n: int, h: int, w: int) -> Maker:
    """Saliency of +-0.0, the smallest subnormals and random subnormals: keys that differ only in low bits."""
    def make(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        smallest = torch.finfo(torch.float32).smallest_normal
        values = torch.tensor([0.0, -0.0, 1e-45, -1e-45, smallest, -smallest])
        pick = values[torch.randint(0, len(values), (n, h, w), generator=g)]
        subnormal = (torch.rand((n, h, w), generator=g) - 0.5) * smallest
        return torch.randn((n, 3, h, w), generator=g), torch.where(torch.rand((n, h, w), generator=g) < 0.5,
                                                                   pick, subnormal)
    return make


def cases(divide: int = 1) -> list[tuple[str, Maker, float, int]]:
    """(name, inputs, p, box) for every case, with image counts divided by `divide`."""
    n, big = 70000 // divide, max(2, 512 // divide)
    return [
        (f"{n}x32x32 fp32", normal(n, 32, 32, torch.float32, torch.float32), 5, 3),
        (f"{n}x32x32 bf16 images, fp32 saliency, p=0.1 box=5", normal(n, 32, 32, torch.bfloat16, torch.float32),
         0.1, 5),
        (f"{n}x32x32 fp16 images, bf16 saliency", normal(n, 32, 32, torch.float16, torch.bfloat16), 5, 3),
        (f"{n}x32x32 three levels (heavy ties)", tied(n, 32, 32, 3), 5, 3),
        (f"{n}x32x32 constant", tied(n, 32, 32, 1), 50, 3),
        (f"{n}x32x32 subnormal and +-0", tiny(n, 32, 32), 5, 3),
        (f"{n}x3x32x32 bf16 gradient", normal(n, 32, 32, torch.bfloat16, torch.bfloat16, channels=3), 5, 3),
        (f"{n // 3}x28x28 fp32 (padded block)", normal(n // 3, 28, 28, torch.float32, torch.float32), 5, 3),
        (f"{big}x224x224 fp32", normal(big, 224, 224, torch.float32, torch.float32), 5, 3),
        (f"{big}x224x224 two levels", tied(big, 224, 224, 2), 30, 5),
        (f"{big // 2}x3x224x224 fp16 gradient", normal(big // 2, 224, 224, torch.float16, torch.float16, channels=3),
         5, 3),
    ]


def run_case(name: str, make: Maker, top_percent: float, box: int, device: torch.device, seed: int) -> list[str]:
    """Failures of one case on every kernel that takes its size (empty when all agree)."""
    images, ranking = (t.to(device) for t in make(torch.Generator().manual_seed(seed)))
    from_gradient = ranking.dim() == 4
    want_erased, want_mask = erase(images, ranking, top_percent, box, from_gradient=from_gradient,
                                   implementation="reference")
    variants = ["packed", "bands", "split"] if variant_for(*images.shape[2:]) == "packed" else ["bands", "split"]
    failures = []
    for variant in variants:
        started = time.perf_counter()
        try:
            result = erase_unchecked(images, ranking, top_percent, box, from_gradient=from_gradient,
                                     implementation=variant)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        except Exception as error:  # a compile or launch failure of one variant must not stop the others
            print(f"FAIL {name} [{variant}]: {type(error).__name__}: {str(error)[-2000:]}", flush=True)
            failures.append(f"{name} [{variant}] ({type(error).__name__})")
            continue
        seconds = time.perf_counter() - started
        wrong_mask = int((result.mask != want_mask).sum())
        bits = torch.int16 if images.element_size() == 2 else torch.int32
        wrong_pixels = int((result.erased.view(bits) != want_erased.view(bits)).sum())
        wrong_anchors = int((result.anchors != result.k).sum())
        flagged = int((result.nonfinite != 0).sum())
        ok = not (wrong_mask or wrong_pixels or wrong_anchors or flagged)
        print(f"{'OK  ' if ok else 'FAIL'} {name} [{variant}] k={result.k}: {wrong_mask} mask, {wrong_pixels} pixel, "
              f"{wrong_anchors} anchor-count, {flagged} non-finite differences ({seconds * 1000:.1f} ms, first call)",
              flush=True)
        if not ok:
            failures.append(f"{name} [{variant}]")
    return failures


def main(argv: list[str] | None = None) -> int:
    """Run every case on the GPU; exit status 1 when any kernel differs from the reference."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--divide", type=int, default=1, help="divide every case's image count by this")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu under TRITON_INTERPRET=1")
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    failures = []
    for index, (name, make, top_percent, box) in enumerate(cases(args.divide)):
        failures += run_case(name, make, top_percent, box, device, args.seed + index)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"{len(failures)} failing: {', '.join(failures)}" if failures else "all cases exact")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
