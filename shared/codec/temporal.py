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

**Skip mode** (:mod:`~layercast.shared.codec.skip`). The encoder marks the latent positions where
something moved; static positions copy ŷ_{t-1} and code nothing, and the parameter networks and
the reference features run at the moving positions only (:meth:`TemporalContextCodec.compress`).

**Dead zone.** A coded element's residual ``y_t − μ`` is quantised with a dead zone: within
``deadzone`` (default 0.6; 0.5 is plain rounding) of its mean it codes the symbol 0. The decoder is
the same for every dead zone: ŷ = symbol + mean. The model trains with a dead zone (STE), so its
scales learn how often the symbol 0 comes.

Low delay only: frame t references frame t-1 (intra or predicted), never a future frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from layercast.shared.codec.coder import Decoder, Encoder
from layercast.shared.codec.configs import CodecConfig
from layercast.shared.codec.entropy import SteGaussianConditional, SymbolChecksum, resize_entropy_buffers
from layercast.shared.codec.intfast import FastChains, usable
from layercast.shared.codec.intparams import IntegerEntropy, from_grid, grid
from layercast.shared.codec.latent_codecs.context import SpaceChannelContextCodec, anchor_mask
from layercast.shared.codec.latent_codecs.hyperprior import HyperpriorLatentCodec
from layercast.shared.codec.skip import (
    DEFAULT_SKIP_THRESHOLD,
    decode_mask,
    encode_mask,
    motion_mask,
    prune_side,
)

#: Initial gate logit of :meth:`TemporalLayer.from_intra`: σ(1) ≈ 0.73, open enough to start from
#: the intra model's means and far from saturation, so that training can close it.
OPEN_GATE = 1.0
#: Dead zone of P-frames (see the module docstring): |y − μ| below it codes the symbol 0.
DEFAULT_DEADZONE = 0.6
#: The motion mask of the frame being compressed, ``(y, reference, mask)``, held for the duration of
#: one ``TemporalLatentCodec.compress`` call (ẑ's pruning and the coding steps read the same mask).
_MASK: ContextVar[tuple[Tensor, Tensor, Tensor] | None] = ContextVar("layercast_motion_mask", default=None)


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
        if mode == "noise":  # training: straight-through outside the dead zone, the mean inside it
            keep = r * (r.abs() >= self.deadzone) if self.deadzone > 0.5 else r
            q = keep + (q - keep).detach()
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
        ref = self._reference(k, side)
        return scales, ref + torch.sigmoid(gate) * (means - ref)

    def _reference(self, k: int, side: Tensor) -> Tensor:
        """Group k's channels of the reference latent ŷ_{t-1} (the last channels of ``side``)."""
        start = side.shape[1] - self.reference_channels + self._offsets[k]
        return side[:, start : start + self.groups[k]]

    # ------------------------------------------------------------------ training
    def forward(self, y: Tensor, side: Tensor, moving: Tensor | None = None) -> dict[str, Any]:
        """As the intra SCCTX, but static positions (``~moving``) copy the reference and cost no bits."""
        if moving is None:
            return super().forward(y, side)
        b, _, h, w = y.shape
        mask = anchor_mask(h, w, y.device)
        y_hats: list[Tensor] = []
        liks: list[Tensor] = []
        for k, y_k in enumerate(y.split(self.groups, dim=1)):
            ref = self._reference(k, side)
            ch_ctx = self._channel_ctx(k, y_hats)
            zero_ctx = y_k.new_zeros(b, 2 * y_k.shape[1], h, w)
            scales_a, means_a = self._params(k, side, ch_ctx, zero_ctx)
            y_hat_a = self.gaussian.quantize(y_k, "noise" if self.training else "dequantize", means_a)
            y_hat_a = torch.where(mask, torch.where(moving, y_hat_a, ref), torch.zeros_like(y_hat_a))
            scales_n, means_n = self._params(k, side, ch_ctx, self.spatial[k](y_hat_a))
            y_hat_k, lik_k = self.gaussian(
                y_k, torch.where(mask, scales_a, scales_n), torch.where(mask, means_a, means_n)
            )
            y_hats.append(torch.where(moving, y_hat_k, ref))
            liks.append(torch.where(moving, lik_k, torch.ones_like(lik_k)))
        return {"y_hat": torch.cat(y_hats, dim=1), "likelihoods": {"y": torch.cat(liks, dim=1)}}

    # ------------------------------------------------------------------ coding
    def _sparse_steps(
        self, z_sym: Tensor, ref: Tensor, moving: Tensor, integer: IntegerEntropy, code_fn
    ) -> Tensor:
        """The coding steps of ``_steps``, with the integer networks run only where something is
        coded: at the moving positions of each step (static ones take the reference ``ref``,
        ŷ_{t-1}). On the CPU through ``FastChains.steps_at``, else on the reference layers; the
        same integers either way.

        ``code_fn(k, at, counts, indexes, means) -> values``: the step's moving positions ``at``
        (image, row, column indexes) gathered as rows, image by image and in raster order within an
        image (``counts[i]`` rows of image i), one column per channel of group k."""
        ref = ref.float()
        if usable(z_sym.device) and (chains := FastChains.of(integer)).whole:
            return chains.steps_at(z_sym, ref, moving, code_fn)
        side = self._reference_side(integer, z_sym, ref, moving)
        b, _, h, w = side.shape
        anchors = anchor_mask(h, w, side.device)
        coded = moving[:, 0]
        ref_grid = grid(ref)
        y_hats: list[Tensor] = []
        for k, c in enumerate(self.groups):
            ch_ctx = integer.channel_ctx(k, y_hats)
            start = self._offsets[k]
            y_hat_k = ref[:, start : start + c].clone()
            for sel in (anchors, ~anchors):
                bi, ii, jj = (coded & sel).nonzero(as_tuple=True)
                if sel is anchors:
                    sp_ctx = side.new_zeros(len(bi), 2 * c)
                else:  # the anchors decoded so far (the masked convolution reads nothing else)
                    sp_ctx = integer.spatial_at(k, torch.where(anchors, y_hat_k, 0.0), (bi, ii, jj))
                parts = [side[bi, :, ii, jj], sp_ctx]
                if ch_ctx is not None:
                    parts.insert(1, ch_ctx[bi, :, ii, jj])
                r = ref_grid[bi, start : start + c, ii, jj] if len(bi) else ref_grid.new_zeros(0, c)
                indexes, means = integer.params_at(k, torch.cat(parts, dim=1), r)
                counts = torch.bincount(bi, minlength=b).tolist()
                y_hat_k[bi, :, ii, jj] = code_fn(k, (bi, ii, jj), counts, indexes, from_grid(means))
            y_hats.append(y_hat_k)
        return torch.cat(y_hats, dim=1)

    @staticmethod
    def _reference_side(integer: IntegerEntropy, z_sym: Tensor, ref: Tensor, moving: Tensor) -> Tensor:
        """The integer side input [h_s(ẑ), c(ŷ_{t-1}), ŷ_{t-1}] on the reference layers, the
        reference's features computed at the moving positions only (the coding steps read nothing
        else; zeros elsewhere)."""
        shape = tuple(ref.shape[2:])
        hs = integer.side(z_sym, None, shape)
        ref_int = integer.cond_input(ref)
        assert integer.condition is not None
        features = hs.new_zeros(ref.shape[0], integer.condition.layers[-1].lin.bias.numel(), *shape)
        at = moving[:, 0].nonzero(as_tuple=True)
        if len(at[0]):
            features[at[0], :, at[1], at[2]] = integer.condition_at(ref_int, at)
        return torch.cat([hs, features, ref_int], dim=1)

    def compress(  # type: ignore[override]
        self,
        y: Tensor,
        z_sym: Tensor,
        encoders: list[Encoder],
        checksums: list[SymbolChecksum],
        integer: IntegerEntropy,
        ref: Tensor,
        moving: Tensor,
    ) -> Tensor:
        """Code the moving positions of ``y``; static ones take the reference's values."""
        t = self.tables()
        groups = y.float().split(self.groups, dim=1)

        from layercast.shared.codec import intkernels  # numba loads on the first coding

        deadzone = np.float32(self.gaussian.deadzone)

        def code(k: int, at: tuple[Tensor, ...], counts: list[int], indexes: Tensor, means: Tensor) -> Tensor:
            bi, ii, jj = at
            mu = means.float().cpu().numpy()
            sym_np = np.empty(mu.shape, np.int32)  # self._symbols(y, means), in one compiled pass
            intkernels.deadzone_symbols(groups[k][bi, :, ii, jj].cpu().numpy(), mu, deadzone, sym_np)
            idx_np = indexes.cpu().numpy()
            start = 0
            for i, n in enumerate(counts):  # channel-major within each image
                sym, idx = sym_np[start : start + n].T.reshape(-1), idx_np[start : start + n].T.reshape(-1)
                encoders[i].encode(sym, idx, t)
                checksums[i].update(sym)
                start += n
            return torch.from_numpy(sym_np).to(device=means.device, dtype=means.dtype) + means

        return self._sparse_steps(z_sym, ref, moving, integer, code)

    def decompress(  # type: ignore[override]
        self,
        z_sym: Tensor,
        decoders: list[Decoder],
        checksums: list[SymbolChecksum],
        integer: IntegerEntropy,
        ref: Tensor,
        moving: Tensor,
    ) -> Tensor:
        t = self.tables()

        def code(k: int, at: tuple[Tensor, ...], counts: list[int], indexes: Tensor, means: Tensor) -> Tensor:
            idx_np = indexes.cpu().numpy()
            c = idx_np.shape[1]
            out = np.empty(idx_np.shape, dtype=np.int32)
            start = 0
            for i, n in enumerate(counts):
                values = decoders[i].decode(idx_np[start : start + n].T.reshape(-1), t)
                checksums[i].update(values)
                out[start : start + n] = values.reshape(c, n).T
                start += n
            return torch.from_numpy(out).to(device=means.device, dtype=means.dtype) + means

        return self._sparse_steps(z_sym, ref, moving, integer, code)


class TemporalLatentCodec(HyperpriorLatentCodec):
    """Hyperprior + temporal SCCTX: ``y_t`` given ``ẑ_t`` and the reference latent ``ŷ_{t-1}``."""

    def __init__(self, latent_channels: int, hyper_channels: int, groups: Sequence[int]) -> None:
        super().__init__(latent_channels, hyper_channels, groups, condition_channels=latent_channels)
        self.y_codec = TemporalContextCodec(groups, 2 * latent_channels, latent_channels)
        #: The encoder's skip decision (:func:`~layercast.shared.codec.skip.motion_mask`); not stored.
        self.skip_threshold = DEFAULT_SKIP_THRESHOLD

    def _side(self, z_hat: Tensor, condition: Tensor | None) -> Tensor:
        if condition is None:
            raise ValueError("a predicted frame needs its reference latent")
        side = self.h_s(z_hat)
        ref = condition.to(side.dtype)
        if side.shape[2:] != ref.shape[2:]:  # h_s upsamples x4: crop to y's grid
            side = side[:, :, : ref.shape[2], : ref.shape[3]]
        return torch.cat([side, self.condition(ref), ref], dim=1)

    @torch.no_grad()
    def compress(self, y: Tensor, condition: Tensor | None = None) -> dict[str, Any]:
        """``HyperpriorLatentCodec.compress``, the motion mask computed once for the call."""
        token = _MASK.set(None)
        try:
            return super().compress(y, condition)
        finally:
            _MASK.reset(token)

    def _motion_mask(self, y: Tensor, condition: Tensor) -> Tensor:
        held = _MASK.get()
        if held is not None and held[0] is y and held[1] is condition:
            return held[2]
        moving = motion_mask(y, condition, self.skip_threshold)
        _MASK.set((y, condition, moving))
        return moving

    def _z_symbols(self, y: Tensor, z: Tensor, condition: Tensor | None) -> Tensor:
        z_sym = super()._z_symbols(y, z, condition)
        if condition is None:
            return z_sym
        return prune_side(z_sym, self._motion_mask(y, condition))

    def _forward_y(self, y: Tensor, side: Tensor, condition: Tensor | None) -> dict[str, Any]:
        moving = motion_mask(y, condition, self.skip_threshold)  # type: ignore[arg-type]
        return {**self.y_codec(y, side, moving), "moving": moving}

    def _compress_y(
        self,
        y: Tensor,
        z_sym: Tensor,
        condition: Tensor | None,
        encoders: list[Encoder],
        checksums: list[SymbolChecksum],
    ) -> Tensor:
        if condition is None:
            raise ValueError("a predicted frame needs its reference latent")
        moving = self._motion_mask(y, condition)
        for i, (e, c) in enumerate(zip(encoders, checksums, strict=True)):
            encode_mask(moving[i], e, c)
        return self.y_codec.compress(y, z_sym, encoders, checksums, self._integer(), condition, moving)

    def _decompress_y(
        self,
        z_sym: Tensor,
        shape: tuple[int, int],
        condition: Tensor | None,
        decoders: list[Decoder],
        checksums: list[SymbolChecksum],
    ) -> Tensor:
        if condition is None:
            raise ValueError("a predicted frame needs its reference latent")
        masks = [decode_mask(shape, d, c) for d, c in zip(decoders, checksums, strict=True)]
        moving = torch.cat(masks).to(z_sym.device)
        return self.y_codec.decompress(z_sym, decoders, checksums, self._integer(), condition, moving)


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

    @property
    def skip_threshold(self) -> float:
        return self.latent_codec.skip_threshold

    @skip_threshold.setter
    def skip_threshold(self, value: float) -> None:
        if not 0 <= value < 100:
            raise ValueError(f"skip threshold must be within [0, 100), got {value}")
        self.latent_codec.skip_threshold = float(value)

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
