"""Small building blocks of the ELIC-style transforms (He et al., CVPR 2022)."""

from __future__ import annotations

import copy

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


class SubPixelConv(nn.Module):
    """``ConvTranspose2d(k=5, stride=2, padding=2, output_padding=1)`` as a 3×3 convolution into
    4·out channels and ``PixelShuffle(2)``: the same linear map (output pixel (2i+a, 2j+b) takes
    input taps i-1..i+1 with kernel entries 4-2p+a, zero where that leaves 0..4)."""

    def __init__(self, deconv: nn.ConvTranspose2d) -> None:
        super().__init__()
        w = deconv.weight.detach()  # (in, out, 5, 5)
        cin, cout = w.shape[:2]
        k = torch.zeros(cout, 2, 2, cin, 3, 3, dtype=w.dtype, device=w.device)
        for a in range(2):
            for b in range(2):
                for p in range(3):
                    for q in range(3):
                        kh, kw = 4 - 2 * p + a, 4 - 2 * q + b
                        if kh <= 4 and kw <= 4:
                            k[:, a, b, :, p, q] = w[:, :, kh, kw].t()
        self.conv = nn.Conv2d(cin, 4 * cout, 3, padding=1, device=w.device, dtype=w.dtype)
        self.conv.weight.data = k.reshape(4 * cout, cin, 3, 3)
        bias = deconv.bias.detach() if deconv.bias is not None else torch.zeros_like(k[:, 0, 0, 0, 0, 0])
        self.conv.bias.data = bias.repeat_interleave(4)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.conv(x))

    @staticmethod
    def applies(m: nn.Module, max_out_channels: int | None = None) -> bool:
        """``m`` is a transposed convolution this class computes (and has at most
        ``max_out_channels`` output channels, when given)."""
        return (
            isinstance(m, nn.ConvTranspose2d)
            and (max_out_channels is None or m.out_channels <= max_out_channels)
            and m.kernel_size == (5, 5)
            and m.stride == (2, 2)
            and m.padding == (2, 2)
            and m.output_padding == (1, 1)
            and m.groups == 1
            and m.dilation == (1, 1)
        )


def to_subpixel(module: nn.Module, max_out_channels: int | None = None) -> nn.Module:
    """A copy of ``module`` with every matching ConvTranspose2d (with at most ``max_out_channels``
    output channels, when given) replaced by ``SubPixelConv``."""
    module = copy.deepcopy(module)
    for child in list(module.modules()):
        for cname, c in list(child.named_children()):
            if SubPixelConv.applies(c, max_out_channels):
                setattr(child, cname, SubPixelConv(c))
    return module
