"""`cifarnet`, the embedded default: a small, fast CIFAR-10 network in the style of the airbench recipes.

Tricks taken from those recipes (Jordan, 2024, "94% on CIFAR-10 in 3.29 seconds"), where each was measured:
- a frozen 2x2 patch-whitening first layer (PCA of training patches), as in tysam-code's hlb-cifar10;
- three conv groups (conv, max-pool, BN, GELU, conv, BN, GELU), widths 64/256/256, Dirac-initialised;
- BatchNorm with frozen unit scale (only the shift learns) and fast running statistics;
- a bias-free linear head scaled down by 1/9, so early logits stay small.
"""

from __future__ import annotations

import torch
from torch import nn

WIDTHS = (64, 256, 256)
WHITEN_WIDTH = 24  # 12 eigen-patches and their negatives
HEAD_SCALE = 1 / 9


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm with the scale frozen at one: the network is scale-invariant, only shifts learn."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, momentum=0.4, eps=1e-12)
        self.weight.requires_grad_(False)


class ConvGroup(nn.Module):
    """conv -> 2x2 max-pool -> BN -> GELU -> conv -> BN -> GELU."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding="same", bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding="same", bias=False)
        self.norm2 = BatchNorm(channels_out)
        self.activation = nn.GELU()
        for conv in (self.conv1, self.conv2):
            _dirac_init(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.norm1(self.pool(self.conv1(x))))
        return self.activation(self.norm2(self.conv2(x)))


def _dirac_init(conv: nn.Conv2d) -> None:
    """Identity on the first `in_channels` filters, default init elsewhere: the group starts near a skip."""
    n = min(conv.in_channels, conv.out_channels)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:n])


class CifarNet(nn.Module):
    """The default network: 1.97M parameters, 32x32 RGB in, 10 logits out."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = WIDTHS) -> None:
        super().__init__()
        self.whiten = nn.Conv2d(3, WHITEN_WIDTH, 2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.activation = nn.GELU()
        self.groups = nn.Sequential(
            ConvGroup(WHITEN_WIDTH, widths[0]), ConvGroup(widths[0], widths[1]), ConvGroup(widths[1], widths[2])
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[2], num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.activation(self.whiten(x)))
        return self.head(self.pool(x).flatten(1)) * HEAD_SCALE

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the first layer to the PCA whitening of 2x2 patches of `images` (normalised [N,3,H,W])."""
        patches = images.unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, 3 * 2 * 2).double()
        patches = patches - patches.mean(0)
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = (eigenvectors.T.flip(0) / torch.sqrt(eigenvalues.flip(0) + eps)[:, None])
        filters = filters.reshape(-1, 3, 2, 2)  # rows were (channel, kernel row, kernel column)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).float())
