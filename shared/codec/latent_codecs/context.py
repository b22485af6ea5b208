"""Space-channel context model (ELIC's SCCTX) with a Gaussian conditional.

He et al., "ELIC: Efficient Learned Image Compression with Unevenly Grouped
Space-Channel Contextual Adaptive Coding", CVPR 2022. The latent is split into
uneven channel groups; each group is coded in two checkerboard passes (anchors,
then non-anchors), so decoding takes 2·len(groups) parallel steps instead of
the H·W serial steps of a 5x5 masked (autoregressive) context::

    side ─┬───────────────┬─────────────── … (h_s(ẑ) and, for the enhancement, features of Ŷ_b)
          ▼               ▼
    group 0:  anchors ─► non-anchors        ŷ₀
    group 1:  ch-ctx(ŷ₀) + side ─► anchors ─► non-anchors    ŷ₁
    …

Entropy parameters are pointwise (1x1 convs) on [side, channel context,
spatial context], giving (scales, means) of a Gaussian per element.

Coding runs one entropy-coded stream per image (``coder.Encoder``) shared by all steps (no per-step
length fields). The entropy parameters of coding come from the codec's integer model
(:mod:`~layercast.shared.codec.intparams`): the same scale indexes and means (on the ``MEAN_GRID``)
on every device, thread count and batch; ŷ = symbol + mean is exact in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from compressai.layers import CheckerboardMaskedConv2d
from torch import Tensor, nn

from layercast.shared.codec.coder import Decoder, Encoder
from layercast.shared.codec.entropy import CdfTables, SteGaussianConditional, SymbolChecksum
from layercast.shared.codec.intfast import FastEntropy
from layercast.shared.codec.intparams import IntegerEntropy, from_grid


def _pointwise(in_ch: int, out_ch: int) -> nn.Sequential:
    mid = max((in_ch + out_ch) // 2, out_ch)
    return nn.Sequential(
        nn.Conv2d(in_ch, mid, 1),
        nn.ELU(inplace=True),
        nn.Conv2d(mid, mid, 1),
        nn.ELU(inplace=True),
        nn.Conv2d(mid, out_ch, 1),
    )


def _channel_context(in_ch: int, out_ch: int) -> nn.Sequential:
    mid = max(in_ch, out_ch)
    return nn.Sequential(
        nn.Conv2d(in_ch, mid, 3, padding=1),
        nn.ELU(inplace=True),
        nn.Conv2d(mid, out_ch, 3, padding=1),
    )


def anchor_mask(h: int, w: int, device: torch.device) -> Tensor:
    """True at checkerboard anchors ((i + j) even), decoded first."""
    ii = torch.arange(h, device=device)[:, None]
    jj = torch.arange(w, device=device)[None, :]
    return (ii + jj) % 2 == 0


class SpaceChannelContextCodec(nn.Module):
    """Gaussian conditional latent codec with checkerboard × uneven channel-group context."""

    def __init__(self, groups: Sequence[int], side_channels: int) -> None:
        super().__init__()
        self.groups = list(groups)
        self.gaussian = SteGaussianConditional()
        self.spatial = nn.ModuleList(CheckerboardMaskedConv2d(c, 2 * c, 5, padding=2) for c in self.groups)
        self.channel = nn.ModuleList(
            _channel_context(sum(self.groups[:k]), 2 * c) if k else nn.Identity()
            for k, c in enumerate(self.groups)
        )
        self.params = nn.ModuleList(
            _pointwise(side_channels + 2 * c + (2 * c if k else 0), 2 * c) for k, c in enumerate(self.groups)
        )
        self._tables: CdfTables | None = None

    @property
    def channels(self) -> int:
        return sum(self.groups)

    # ------------------------------------------------------------------ helpers
    def _params(self, k: int, side: Tensor, ch_ctx: Tensor | None, sp_ctx: Tensor) -> tuple[Tensor, Tensor]:
        parts = [side, sp_ctx] if ch_ctx is None else [side, ch_ctx, sp_ctx]
        scales, means = self.params[k](torch.cat(parts, dim=1)).chunk(2, dim=1)
        return scales, means

    def _channel_ctx(self, k: int, done: list[Tensor]) -> Tensor | None:
        return self.channel[k](torch.cat(done, dim=1)) if k else None

    def tables(self) -> CdfTables:
        if self._tables is None:
            self._tables = CdfTables.of(self.gaussian)
        return self._tables

    def invalidate_tables(self) -> None:
        self._tables = None

    # ------------------------------------------------------------------ training
    def forward(self, y: Tensor, side: Tensor) -> dict[str, Any]:
        """Two-pass STE forward; returns ``{"y_hat", "likelihoods": {"y"}}``."""
        b, _, h, w = y.shape
        mask = anchor_mask(h, w, y.device)
        y_hats: list[Tensor] = []
        liks: list[Tensor] = []
        for k, y_k in enumerate(y.split(self.groups, dim=1)):
            ch_ctx = self._channel_ctx(k, y_hats)
            zero_ctx = y_k.new_zeros(b, 2 * y_k.shape[1], h, w)
            scales_a, means_a = self._params(k, side, ch_ctx, zero_ctx)
            y_hat_a = self.gaussian.quantize(y_k, "noise" if self.training else "dequantize", means_a)
            y_hat_a = torch.where(mask, y_hat_a, torch.zeros_like(y_hat_a))
            scales_n, means_n = self._params(k, side, ch_ctx, self.spatial[k](y_hat_a))
            scales = torch.where(mask, scales_a, scales_n)
            means = torch.where(mask, means_a, means_n)
            y_hat_k, lik_k = self.gaussian(y_k, scales, means)
            y_hats.append(y_hat_k)
            liks.append(lik_k)
        return {"y_hat": torch.cat(y_hats, dim=1), "likelihoods": {"y": torch.cat(liks, dim=1)}}

    # ------------------------------------------------------------------ coding
    def _steps(
        self, side: Tensor, integer: IntegerEntropy, code_fn, fast: FastEntropy | None = None
    ) -> Tensor:
        """Run the 2·len(groups) coding steps on the integer ``side`` input (``IntegerEntropy.side``,
        or with ``fast`` ``FastEntropy.side``'s channels-last one);
        ``code_fn(k, sel, indexes, means) -> y_hat values at sel`` (each (B, c, positions of ``sel``
        in raster order); ``means`` float32 on the ``MEAN_GRID``). The integer parameter networks
        and the spatial context run at the step's positions only."""
        if fast is not None:
            b, h, w, _ = side.shape
            y_hat = torch.zeros(b, self.channels, h, w)
            fast.steps(side, code_fn, y_hat)
            return y_hat
        b, _, h, w = side.shape
        mask = anchor_mask(h, w, side.device)
        y_hats: list[Tensor] = []
        for k, c in enumerate(self.groups):
            ch_ctx = integer.channel_ctx(k, y_hats)
            y_hat_k = torch.zeros(b, c, h, w, device=side.device)
            for sel in (mask, ~mask):
                ii, jj = sel.nonzero(as_tuple=True)
                n = len(ii)
                at = (torch.arange(b, device=side.device).repeat_interleave(n), ii.repeat(b), jj.repeat(b))
                if sel is mask:
                    sp_ctx = side.new_zeros(b * n, 2 * c)
                else:  # the anchors decoded so far (the masked convolution reads nothing else)
                    sp_ctx = integer.spatial_at(k, y_hat_k, at)
                bi, i2, j2 = at
                parts = (
                    [side[bi, :, i2, j2], sp_ctx]
                    if ch_ctx is None
                    else [side[bi, :, i2, j2], ch_ctx[bi, :, i2, j2], sp_ctx]
                )
                indexes, means = integer.params_at(k, torch.cat(parts, dim=1))
                indexes = indexes.reshape(b, n, c).transpose(1, 2)
                means = from_grid(means).reshape(b, n, c).transpose(1, 2)
                y_hat_k[:, :, sel] = code_fn(k, sel, indexes, means)
            y_hats.append(y_hat_k)
        return torch.cat(y_hats, dim=1)

    def _symbols(self, y: Tensor, means: Tensor) -> Tensor:
        """The integers coded for ``y`` around ``means`` (rounding; P-frames add a dead zone)."""
        return torch.round(y - means)

    def compress(
        self,
        y: Tensor,
        side: Tensor,
        encoders: list[Encoder],
        checksums: list[SymbolChecksum],
        integer: IntegerEntropy,
        fast: FastEntropy | None = None,
    ) -> Tensor:
        """Encode ``y`` (B images) into the per-image encoders; returns ŷ exactly as the decoder will see it."""
        t = self.tables()
        groups = y.float().split(self.groups, dim=1)

        def code(k: int, sel: Tensor, idx: Tensor, means: Tensor) -> Tensor:
            symbols = self._symbols(groups[k][:, :, sel], means).int()
            sym_np = symbols.cpu().numpy().reshape(y.shape[0], -1)
            indexes = idx.cpu().numpy().reshape(y.shape[0], -1)
            for i in range(y.shape[0]):
                encoders[i].encode(sym_np[i], indexes[i], t)
                checksums[i].update(sym_np[i])
            return symbols.to(means.dtype) + means

        return self._steps(side, integer, code, fast)

    def decompress(
        self,
        side: Tensor,
        decoders: list[Decoder],
        checksums: list[SymbolChecksum],
        integer: IntegerEntropy,
        fast: FastEntropy | None = None,
    ) -> Tensor:
        """Decode ŷ with the same steps as ``compress``; ``side`` fixes the batch and spatial size."""
        t = self.tables()

        def code(k: int, sel: Tensor, indexes: Tensor, means: Tensor) -> Tensor:
            idx_np = indexes.cpu().numpy().reshape(indexes.shape[0], -1)
            out = torch.empty(indexes.shape, dtype=torch.int32)
            for i in range(side.shape[0]):
                values = decoders[i].decode(idx_np[i], t)
                checksums[i].update(values)
                out[i] = torch.from_numpy(values).reshape(indexes.shape[1:])
            return out.to(device=means.device, dtype=means.dtype) + means

        return self._steps(side, integer, code, fast)
