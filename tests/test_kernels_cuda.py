"""The Triton erasure kernels on a real GPU: launches on a non-current device, no host sync, CUDA graph capture."""

from __future__ import annotations

import pytest
import torch

from miscause import kernels

if not torch.cuda.is_available():
    pytest.skip("needs a GPU", allow_module_level=True)

SIZES = [32, 100, 224]  # one per kernel the launcher picks: packed, bands, split


def inputs(n: int, h: int, w: int, device: str = "cuda", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images [n, 3, h, w] and saliency [n, h, w] on `device`."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn((n, 3, h, w), generator=generator).to(device),
            torch.randn((n, h, w), generator=generator).to(device))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("size", SIZES)
def test_images_on_a_device_other_than_the_current_one(size: int) -> None:
    images, saliency = inputs(4, size, size, "cuda:1")
    with torch.cuda.device(0):
        erased, mask = kernels.erase(images, saliency, 5, 3, implementation="triton")
        want_erased, want_mask = kernels.erase(images, saliency, 5, 3, implementation="reference")
    assert erased.device == images.device
    assert torch.equal(mask, want_mask) and torch.equal(erased, want_erased)


@pytest.mark.parametrize("size", SIZES)
def test_unchecked_launch_does_not_synchronise(size: int) -> None:
    images, saliency = inputs(8, size, size)
    fill = [0.5, -1.0, 2.0]
    kernels.erase_unchecked(images, saliency, 5, 3, fill)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        result = kernels.erase_unchecked(images, saliency, 5, 3, fill)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    kernels.check_result(result)
    want_erased, want_mask = kernels.erase(images, saliency, 5, 3, fill, implementation="reference")
    assert torch.equal(result.mask, want_mask) and torch.equal(result.erased, want_erased)


@pytest.mark.parametrize("size", SIZES)
def test_unchecked_launch_replays_in_a_cuda_graph(size: int) -> None:
    images, saliency = inputs(16, size, size)
    out = (torch.empty_like(images), torch.empty((16, size, size), dtype=torch.bool, device="cuda"))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        kernels.erase_unchecked(images, saliency, 5, 3, out=out)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        result = kernels.erase_unchecked(images, saliency, 5, 3, out=out)
    for seed in (1, 2):
        new_images, new_saliency = inputs(16, size, size, seed=seed)
        images.copy_(new_images)
        saliency.copy_(new_saliency)
        graph.replay()
        torch.cuda.synchronize()
        kernels.check_result(result)
        want_erased, want_mask = kernels.erase(new_images, new_saliency, 5, 3, implementation="reference")
        assert torch.equal(out[1], want_mask) and torch.equal(out[0], want_erased), f"replay with seed {seed}"
