"""The Triton kernel's launch-side helpers, which need neither a GPU nor the interpreter."""

from __future__ import annotations

import contextlib

import pytest
import torch

from miscause.kernels.erase_spec import check_erase_args
from miscause.kernels.triton_erase import variant_for
from miscause.kernels.triton_shared import device_guard, packed_config, split_config


def test_launch_makes_the_tensors_device_current() -> None:
    guard = device_guard(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert isinstance(device_guard(torch.device("cpu")), contextlib.nullcontext)


def test_fill_given_as_numbers_is_made_once_per_device_and_dtype() -> None:
    images = torch.zeros(1, 3, 4, 4)
    first = check_erase_args(images, torch.zeros(1, 4, 4), 5, 3, [0.1, 0.2, 0.3])
    second = check_erase_args(images, torch.zeros(1, 4, 4), 5, 3, (0.1, 0.2, 0.3))
    assert first.fill_as(torch.bfloat16) is second.fill_as(torch.bfloat16)
    assert first.fill_as(torch.float16) is not first.fill_as(torch.bfloat16)
    want = torch.tensor([0.1, 0.2, 0.3]).to(torch.bfloat16)
    assert torch.equal(first.fill_as(torch.bfloat16), want) and first.fill_as(torch.bfloat16).dtype == torch.bfloat16
    assert check_erase_args(images, torch.zeros(1, 4, 4), 5, 3, None).fill_as(torch.float32).tolist() == [0.0] * 3


def test_fill_tensor_on_a_device_is_not_read_back() -> None:
    images = torch.empty(2, 3, 4, 4, device="meta")
    args = check_erase_args(images, torch.empty(2, 4, 4, device="meta"), 5, 3, torch.empty(3, device="meta"))
    assert args.fill_values is None and args.fill_as(torch.float16).device.type == "meta"
    with pytest.raises(ValueError, match="one value per channel"):
        check_erase_args(images, torch.empty(2, 4, 4, device="meta"), 5, 3, torch.empty(2, device="meta"))


@pytest.mark.parametrize(("height", "width", "variant"), [
    (1, 1, "packed"), (32, 32, "packed"), (64, 64, "packed"), (40, 9, "packed"), (65, 8, "bands"), (8, 65, "bands"),
    (96, 96, "bands"), (127, 128, "bands"), (128, 128, "split"), (224, 224, "split"), (16384, 1, "split"),
    (64, 256, "split"),
])
def test_small_images_take_the_packed_kernel_and_large_ones_the_split(height: int, width: int, variant: str) -> None:
    assert variant_for(height, width) == variant


def test_split_slices_are_whole_rows_of_a_few_thousand_pixels() -> None:
    assert split_config(224, 224) == {"BLOCK": 2048, "BAND": 8, "BLOCK_W": 256, "num_warps": 8, "SLICE": 18,
                                      "SLICES": 16}
    assert (split_config(128, 128)["SLICE"], split_config(128, 128)["SLICES"]) == (32, 4)
    assert (split_config(3, 10000)["SLICE"], split_config(3, 10000)["SLICES"]) == (1, 4)
    assert (split_config(16384, 1)["SLICE"], split_config(16384, 1)["BLOCK"]) == (4096, 2048)


def test_packed_blocks_hold_whole_images_and_drop_masks_when_they_can() -> None:
    assert packed_config(16384, 32, 32) == {"IMAGES": 4, "HB": 32, "WB": 32, "EVEN": True, "num_warps": 4}
    assert packed_config(16383, 32, 32)["EVEN"] is False
    assert packed_config(16384, 32, 30)["EVEN"] is False
    config = packed_config(7, 5, 7)
    assert (config["HB"], config["WB"], config["IMAGES"]) == (8, 8, 64)
    with pytest.raises(ValueError, match="sides up to 64"):
        packed_config(1, 65, 3)
