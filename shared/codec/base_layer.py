"""The base layer: what the cloud's machine task needs, and a free preview.

de Andrade & Bajić, "Towards Task-Compatible Compressible Representations"::

    x ── g_a ── y ── Q ─┬─ entropy model (hyperprior + SCCTX) ─► base bitstream
                        │
                        ŷ_b ─┬─ g_s_task ─► x̃ (3 channels) ─► unmodified task model
                             └─ g_simple ─► x̂ (preview; the β term of the loss)
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from layercast.shared.codec.configs import CodecConfig
from layercast.shared.codec.latent_codecs.hyperprior import HyperpriorLatentCodec
from layercast.shared.codec.transforms import AnalysisTransform, SimpleSynthesis, SynthesisTransform


class BaseLayer(nn.Module):
    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        m = config.latent_channels
        self.g_a = AnalysisTransform(config.widths, m, config.res_depth)
        self.latent_codec = HyperpriorLatentCodec(m, config.hyper_channels, config.groups)
        self.g_s_task = SynthesisTransform(config.widths, m, config.res_depth, out_channels=3)
        self.g_simple = SimpleSynthesis(m, config.simple_hidden)

    def forward(self, x: Tensor) -> dict[str, Any]:
        """x in [0, 1], padded to ``config.pad_multiple``. Returns ŷ_b, likelihoods, x_task and x_preview."""
        out = self.latent_codec(self.g_a(x))
        y_hat = out["y_hat"]
        return {
            "y_hat": y_hat,
            "likelihoods": out["likelihoods"],
            "x_task": self.g_s_task(y_hat),
            "x_preview": self.g_simple(y_hat),
        }

    def task_image(self, y_hat: Tensor) -> Tensor:
        return self.g_s_task(y_hat)

    def preview(self, y_hat: Tensor) -> Tensor:
        return self.g_simple(y_hat).clamp(0, 1)
