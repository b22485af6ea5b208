"""Analysis and synthesis transforms.

ELIC-style (He et al., CVPR 2022) as used by de Andrade & Bajić: four 5x5
stride-2 convolutions with residual units between the stages::

    x ─ conv↓ ─ res ─ conv↓ ─ res ─ conv↓ ─ res ─ conv↓ ─ y        (g_a, /16)
    ŷ ─ deconv↑ ─ res ─ deconv↑ ─ res ─ deconv↑ ─ res ─ deconv↑ ─ x̂  (g_s, x16)

The *simple* synthesis that earns the β reconstruction reward is deliberately
weak (one 3x3 conv, one 1x1 conv and a pixel shuffle): it limits the
predictive family V_d of the paper, so the base latent is pushed to keep
information any decoder can read rather than co-adapting with a big one.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from layercast.shared.codec.layers import conv, deconv, residual_stack


class AnalysisTransform(nn.Module):
    """g_a: 3 → widths[0] → widths[1] → widths[2] → M, each stage stride 2."""

    def __init__(
        self, widths: Sequence[int], latent_channels: int, res_depth: int, in_channels: int = 3
    ) -> None:
        super().__init__()
        chans = [in_channels, *widths, latent_channels]
        layers: list[nn.Module] = []
        for i in range(4):
            layers.append(conv(chans[i], chans[i + 1]))
            if i < 3 and res_depth:
                layers.append(residual_stack(chans[i + 1], res_depth))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SynthesisTransform(nn.Module):
    """g_s: M → widths[2] → widths[1] → widths[0] → out_channels, each stage x2."""

    def __init__(
        self, widths: Sequence[int], latent_channels: int, res_depth: int, out_channels: int
    ) -> None:
        super().__init__()
        chans = [latent_channels, *reversed(list(widths)), out_channels]
        layers: list[nn.Module] = []
        for i in range(4):
            if i > 0 and res_depth:
                layers.append(residual_stack(chans[i], res_depth))
            layers.append(deconv(chans[i], chans[i + 1]))
        self.net = nn.Sequential(*layers)

    def forward(self, y: Tensor) -> Tensor:
        return self.net(y)


class SimpleSynthesis(nn.Module):
    """g_simple: the deliberately simple decoder of the preview image (x16 by pixel shuffle)."""

    def __init__(self, latent_channels: int, hidden: int, out_channels: int = 3, factor: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(latent_channels, hidden, 3, padding=1),
            nn.ELU(inplace=True),
            nn.Conv2d(hidden, out_channels * factor * factor, 1),
            nn.PixelShuffle(factor),
        )

    def forward(self, y: Tensor) -> Tensor:
        return self.net(y)


class HyperAnalysis(nn.Module):
    """h_a: y → z at a further /4 (two stride-2 stages)."""

    def __init__(self, latent_channels: int, hyper_channels: int) -> None:
        super().__init__()
        n = hyper_channels
        self.net = nn.Sequential(
            nn.Conv2d(latent_channels, n, 3, padding=1),
            nn.ELU(inplace=True),
            conv(n, n),
            nn.ELU(inplace=True),
            conv(n, n),
        )

    def forward(self, y: Tensor) -> Tensor:
        return self.net(y)


class HyperSynthesis(nn.Module):
    """h_s: ẑ → side parameters at the latent's resolution."""

    def __init__(self, hyper_channels: int, out_channels: int) -> None:
        super().__init__()
        n = hyper_channels
        self.net = nn.Sequential(
            deconv(n, n),
            nn.ELU(inplace=True),
            deconv(n, n * 3 // 2),
            nn.ELU(inplace=True),
            nn.Conv2d(n * 3 // 2, out_channels, 3, padding=1),
        )

    def forward(self, z_hat: Tensor) -> Tensor:
        return self.net(z_hat)
