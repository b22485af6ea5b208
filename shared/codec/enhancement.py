"""The enhancement layer, coded conditionally on the base latent.

    x ── g_a_e ── y_e ── Q ── entropy model(· | Ŷ_b) ─► enhancement bitstream
                         ŷ_e ─┐
                 Ŷ_b ── c ────┴─ g_s_e ─► target (reconstruction or segmentation logits)

Rate is h(Y_e | Ŷ_b); the base is frozen while this trains. ``standalone``
zeroes the base conditioning (entropy model and synthesis alike): the lower
bound the paper compares with.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from layercast.shared.codec.configs import CodecConfig
from layercast.shared.codec.latent_codecs.hyperprior import HyperpriorLatentCodec
from layercast.shared.codec.transforms import AnalysisTransform, SynthesisTransform

Target = Literal["reconstruction", "segmentation"]

#: Output channels per target (segmentation: the 19 Cityscapes train ids).
TARGET_CHANNELS: dict[str, int] = {"reconstruction": 3, "segmentation": 19}


class EnhancementLayer(nn.Module):
    def __init__(
        self,
        config: CodecConfig,
        base_channels: int,
        target: Target = "reconstruction",
        standalone: bool = False,
    ) -> None:
        super().__init__()
        if target not in TARGET_CHANNELS:
            raise ValueError(f"unknown enhancement target {target!r}; choose from {sorted(TARGET_CHANNELS)}")
        self.config = config
        self.target = target
        self.standalone = standalone
        self.base_channels = base_channels
        m = config.latent_channels
        self.g_a = AnalysisTransform(config.widths, m, config.res_depth)
        self.latent_codec = HyperpriorLatentCodec(
            m, config.hyper_channels, config.groups, condition_channels=base_channels
        )
        self.g_s = SynthesisTransform(
            config.widths, m + base_channels, config.res_depth, TARGET_CHANNELS[target]
        )

    def condition(self, y_hat_base: Tensor) -> Tensor:
        return torch.zeros_like(y_hat_base) if self.standalone else y_hat_base

    def forward(self, x: Tensor, y_hat_base: Tensor) -> dict[str, Any]:
        cond = self.condition(y_hat_base)
        out = self.latent_codec(self.g_a(x), cond)
        return {
            "y_hat": out["y_hat"],
            "likelihoods": out["likelihoods"],
            "x_hat": self.synthesize(out["y_hat"], cond),
        }

    def synthesize(self, y_hat: Tensor, condition: Tensor) -> Tensor:
        return self.g_s(torch.cat([y_hat, condition.to(y_hat.dtype)], dim=1))
