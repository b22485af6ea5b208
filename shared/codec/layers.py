"""Small building blocks of the ELIC-style transforms (He et al., CVPR 2022)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def conv(in_ch: int, out_ch: int, kernel_size: int = 5, stride: int = 2) -> nn.Conv2d:
    """Strided convolution that halves the resolution (ELIC: 5x5, stride 2)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2)


def deconv(in_ch: int, out_ch: int, kernel_size: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    """Transposed convolution that doubles the resolution exactly."""
    return nn.ConvTranspose2d(
        in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, output_padding=stride - 1
    )


class ResidualUnit(nn.Module):
    """Residual bottleneck unit: x + (1x1 → ELU → 3x3 → ELU → 1x1)(x), as in the paper's transforms."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = max(channels // 2, 8)
        self.body = nn.Sequential(
            nn.Conv2d(channels, mid, 1),
            nn.ELU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1),
            nn.ELU(inplace=True),
            nn.Conv2d(mid, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def residual_stack(channels: int, depth: int) -> nn.Sequential:
    return nn.Sequential(*[ResidualUnit(channels) for _ in range(depth)])


def ste_round(x: Tensor) -> Tensor:
    """Rounding with a straight-through gradient (the paper's quantisation in training)."""
    return x + (torch.round(x) - x).detach()
