"""The pixel contract of every model: uint8 images [N,H,W,C] in, float32 [N,C,H,W] normalised per channel with
the mean and std its config.json records. Training, evaluation, the analysis and the service all use this."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def normalize(pixels: torch.Tensor, mean: Sequence[float] | torch.Tensor,
              std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """uint8 [N,H,W,C] (any device) to contiguous float32 [N,C,H,W], (x / 255 - mean) / std per channel."""
    images = pixels.permute(0, 3, 1, 2).to(torch.float32) / 255.0
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return images.sub_(mean).div_(std).contiguous()
