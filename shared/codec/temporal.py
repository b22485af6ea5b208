"""Predicted (P) frames of the base layer: ŷ_b coded conditionally on the previous frame's ŷ_b.

A fixed camera's consecutive frames share most of their content, and so do their base latents.
A P-frame keeps the per-frame analysis transform (the task path and the enhancement layer see the
same kind of ŷ_b as in an intra frame) and changes only the entropy model, in the spirit of DCVC's
conditional coding (Li, Li, Lu, "Deep Contextual Video Compression", NeurIPS 2021) in the latent
domain, and of the paper's own conditioning of Ŷ_e on Ŷ_b::

            ┌── h_a ── z ── Q ── EB ── ẑ ── h_s ──┐
            │                                     ▼
    y_t ────┴─────────────────────────► SCCTX(y_t | side) ─► ŷ_t
                                             ▲
    ŷ_{t-1} ── c ── [features, ŷ_{t-1}] ─────┘

Each context step's parameter network returns a scale, a mean and a *gate* per element; the mean
used for coding is ``ŷ_{t-1} + σ(gate) · (μ − ŷ_{t-1})``: where the previous latent predicts the
current one (a static background) the gate closes, the mean becomes ŷ_{t-1} and the learned scale
shrinks, so the element costs a fraction of a bit; where something moved it opens and the element
is coded as in an intra frame. :meth:`TemporalLayer.from_intra` copies the intra model's weights
into the new networks (the gate starts part open, σ(1), so that it trains).

**Skip by dead zone.** A P-frame's residual ``y_t − μ`` is quantised with a dead zone: an element
within ``deadzone`` (default 0.5: plain rounding) of its mean codes the symbol 0. With the mean at
ŷ_{t-1}, a wider dead zone keeps a static element at its previous value instead of coding the
sensor noise that moved it (the skip mode of a video coder, chosen per element by the encoder).
The decoder is the same for every dead zone: ŷ = symbol + mean. The model trains with the dead
zone it is used with (STE), so its scales learn how often the symbol 0 comes.

Low delay only: frame t references frame t-1 (intra or predicted), never a future frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from layercast.shared.codec.configs import CodecConfig
from layercast.shared.codec.entropy import SteGaussianConditional, resize_entropy_buffers
from layercast.shared.codec.latent_codecs.context import SpaceChannelContextCodec
from layercast.shared.codec.latent_codecs.hyperprior import HyperpriorLatentCodec

#: Initial gate logit of :meth:`TemporalLayer.from_intra`: σ(1) ≈ 0.73, open enough to start from
#: the intra model's means and far from saturation, so that training can close it.
OPEN_GATE = 1.0
#: Dead zone of P-frames (see the module docstring): |y − μ| below it codes the symbol 0.
DEFAULT_DEADZONE = 0.75


def deadzone_round(r: Tensor, deadzone: float) -> Tensor:
    """round(r), and 0 where |r| < ``deadzone`` (0.5 is plain rounding)."""
    q = torch.round(r)
    return q if deadzone <= 0.5 else torch.where(r.abs() < deadzone, torch.zeros_like(q), q)


class DeadzoneGaussianConditional(SteGaussianConditional):
    """The Gaussian conditional of P-frames: quantisation with a dead zone around the mean."""

    def __init__(self, deadzone: float = DEFAULT_DEADZONE) -> None:
        super().__init__()
        self.deadzone = float(deadzone)

    def quantize(self, inputs: Tensor, mode: str, means: Tensor | None = None) -> Tensor:
        r = inputs if means is None else inputs - means
        q = deadzone_round(r, self.deadzone)
        if mode == "noise":  # training: straight-through
            q = r + (q - r).detach()
        elif mode == "symbols":
            return q.int()
        return q if means is None else q + means


def _gated_pointwise(side: int, reference: int, c: int, *, first: bool) -> nn.Sequential:
    """The intra parameter network (same hidden width) with ``reference`` more inputs and a gate output."""
    intra_in = side + 2 * c + (0 if first else 2 * c)
    mid = max((intra_in + 2 * c) // 2, 2 * c)
    return nn.Sequential(
        nn.Conv2d(intra_in + reference, mid, 1),
        nn.ELU(inplace=True),
        nn.Conv2d(mid, mid, 1),
        nn.ELU(inplace=True),
        nn.Conv2d(mid, 3 * c, 1),
    )


class TemporalContextCodec(SpaceChannelContextCodec):
    """SCCTX whose side input ends with the reference latent ŷ_{t-1}; means gated towards it."""

    def __init__(self, groups: Sequence[int], side_channels: int, reference_channels: int) -> None:
        """``side_channels``: h_s(ẑ)'s; the side input is [h_s(ẑ), c(ŷ_{t-1}) (as wide), ŷ_{t-1}]."""
        new = side_channels + reference_channels
        super().__init__(groups, side_channels + new)
        self.reference_channels = reference_channels
        # the hidden widths of the intra model's networks, so that from_intra can copy them
        self.params = nn.ModuleList(
            _gated_pointwise(side_channels, new, c, first=k == 0) for k, c in enumerate(self.groups)
        )
        self._offsets = [sum(self.groups[:k]) for k in range(len(self.groups))]
        self.gaussian = DeadzoneGaussianConditional()

    def _symbols(self, y: Tensor, means: Tensor) -> Tensor:
        return deadzone_round(y - means, self.gaussian.deadzone)

    def _params(self, k: int, side: Tensor, ch_ctx: Tensor | None, sp_ctx: Tensor) -> tuple[Tensor, Tensor]:
        parts = [side, sp_ctx] if ch_ctx is None else [side, ch_ctx, sp_ctx]
        scales, means, gate = self.params[k](torch.cat(parts, dim=1)).chunk(3, dim=1)
        start = side.shape[1] - self.reference_channels + self._offsets[k]
        ref = side[:, start : start + self.groups[k]]
        return scales, ref + torch.sigmoid(gate) * (means - ref)


class TemporalLatentCodec(HyperpriorLatentCodec):
    """Hyperprior + temporal SCCTX: ``y_t`` given ``ẑ_t`` and the reference latent ``ŷ_{t-1}``."""

    def __init__(self, latent_channels: int, hyper_channels: int, groups: Sequence[int]) -> None:
        super().__init__(latent_channels, hyper_channels, groups, condition_channels=latent_channels)
        self.y_codec = TemporalContextCodec(groups, 2 * latent_channels, latent_channels)

    def _side(self, z_hat: Tensor, condition: Tensor | None) -> Tensor:
        if condition is None:
            raise ValueError("a predicted frame needs its reference latent")
        side = self.h_s(z_hat)
        ref = condition.to(side.dtype)
        if side.shape[2:] != ref.shape[2:]:  # h_s upsamples x4: crop to y's grid
            side = side[:, :, : ref.shape[2], : ref.shape[3]]
        return torch.cat([side, self.condition(ref), ref], dim=1)


class TemporalLayer(nn.Module):
    """The P-frame model of one base layer: only an entropy model (g_a, g_s_task stay the base's)."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        m = config.latent_channels
        self.latent_codec = TemporalLatentCodec(m, config.hyper_channels, config.groups)

    @property
    def deadzone(self) -> float:
        return self.latent_codec.y_codec.gaussian.deadzone

    @deadzone.setter
    def deadzone(self, value: float) -> None:
        if not 0.5 <= value < 2.0:
            raise ValueError(f"dead zone must be within [0.5, 2), got {value}")
        self.latent_codec.y_codec.gaussian.deadzone = float(value)

    def forward(self, y: Tensor, reference: Tensor) -> dict[str, Any]:
        """Training: STE-quantised ŷ_t and the likelihoods of ẑ_t and ŷ_t given ``reference``."""
        return self.latent_codec(y, reference)

    @classmethod
    def from_intra(
        cls, base_latent_codec: HyperpriorLatentCodec, config: CodecConfig, gate: float = OPEN_GATE
    ) -> TemporalLayer:
        """A P model that codes (almost) as the intra model until it is trained.

        Hyper analysis/synthesis, the factorised prior and the context convolutions are copied; each
        parameter network gets the intra weights on its intra inputs, zeros on the new inputs
        (features of the reference and the reference itself) and an open gate."""
        layer = cls(config)
        dst = layer.latent_codec
        src = base_latent_codec
        z_state = {f"z_entropy.{k}": v for k, v in src.z_entropy.state_dict().items()}
        resize_entropy_buffers(dst, z_state)  # the factorised prior's CDF tables come along
        for name in ("h_a", "h_s", "z_entropy"):
            getattr(dst, name).load_state_dict(getattr(src, name).state_dict())
        dst.y_codec.spatial.load_state_dict(src.y_codec.spatial.state_dict())
        dst.y_codec.channel.load_state_dict(src.y_codec.channel.state_dict())
        side = 2 * config.latent_channels
        new = side + config.latent_channels  # features of ŷ_{t-1}, then ŷ_{t-1}
        with torch.no_grad():
            for k, c in enumerate(dst.y_codec.groups):
                s_net, d_net = src.y_codec.params[k], dst.y_codec.params[k]
                s0, d0 = s_net[0], d_net[0]
                d0.weight.zero_()
                d0.weight[:, :side] = s0.weight[:, :side]
                d0.weight[:, side + new :] = s0.weight[:, side:]
                d0.bias.copy_(s0.bias)
                d_net[2].load_state_dict(s_net[2].state_dict())
                s_last, d_last = s_net[4], d_net[4]
                d_last.weight.zero_()
                d_last.weight[: 2 * c] = s_last.weight
                d_last.bias.zero_()
                d_last.bias[: 2 * c] = s_last.bias
                d_last.bias[2 * c :] = gate
        return layer
