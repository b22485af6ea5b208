"""Small building blocks of the CPU-sized task models.

``TinyEncoder`` gives features at strides 2, 4, 8, 16, 32; ``TopDownDecoder``
fuses them top-down (FPN-style: 1×1 lateral, upsample, add, 3×3) and returns
the map at one chosen stride::

    x ─s2─ f1 ─s4─ f2 ─s8─ f3 ─s16─ f4 ─s32─ f5
                                          │
     out ◄─3×3─ (+) ◄─up─ ... ◄─up─ (+) ◄─┘   (stops at the requested stride)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNAct(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU."""

    def __init__(
        self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def separable_conv(cin: int, cout: int) -> nn.Sequential:
    """Depthwise 3×3 + pointwise 1×1, each with BatchNorm + ReLU (a cheap 3×3 conv)."""
    return nn.Sequential(ConvBNAct(cin, cin, 3, groups=cin), ConvBNAct(cin, cout, 1))


def conv3x3(cin: int, cout: int, separable: bool) -> nn.Module:
    """A 3×3 ConvBNAct, or its depthwise-separable version."""
    return separable_conv(cin, cout) if separable else ConvBNAct(cin, cout, 3)


class SeparableResidual(nn.Module):
    """Depthwise 3×3 + pointwise 1×1 with a residual connection."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.dw = ConvBNAct(ch, ch, 3, groups=ch)
        self.pw = ConvBNAct(ch, ch, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.pw(self.dw(x)))


class TinyEncoder(nn.Module):
    """Five stride-2 stages; ``widths[i]`` channels at stride ``2**(i+1)``."""

    def __init__(
        self, widths: Sequence[int] = (16, 32, 64, 96, 128), blocks: Sequence[int] = (0, 1, 2, 2, 2)
    ) -> None:
        super().__init__()
        if len(widths) != 5 or len(blocks) != 5:
            raise ValueError("TinyEncoder needs 5 widths and 5 block counts")
        stages = []
        cin = 3
        for w, n in zip(widths, blocks, strict=True):
            stages.append(nn.Sequential(ConvBNAct(cin, w, 3, 2), *[SeparableResidual(w) for _ in range(n)]))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.widths = tuple(widths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class TopDownDecoder(nn.Module):
    """Fuse encoder features top-down and return ``channels`` maps at stride ``2**out_level``."""

    def __init__(
        self, in_widths: Sequence[int], channels: int, out_level: int, separable: bool = False
    ) -> None:
        super().__init__()
        if not 1 <= out_level <= len(in_widths):
            raise ValueError(f"out_level must be in 1..{len(in_widths)}")
        self.out_index = out_level - 1
        used = in_widths[self.out_index :]
        self.lateral = nn.ModuleList(nn.Conv2d(w, channels, 1) for w in used)
        self.smooth = nn.ModuleList(conv3x3(channels, channels, separable) for _ in used[:-1])

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        used = feats[self.out_index :]
        x = self.lateral[-1](used[-1])
        for i in range(len(used) - 2, -1, -1):
            lat = self.lateral[i](used[i])
            x = lat + F.interpolate(x, size=lat.shape[-2:], mode="nearest")
            x = self.smooth[i](x)
        return x
