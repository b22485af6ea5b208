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
length fields); parameters are computed in the module's dtype (the facade
uses float64) and means are snapped to ``MEAN_GRID`` for exact replay.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from compressai.layers import CheckerboardMaskedConv2d
from torch import Tensor, nn

from layercast.shared.codec.coder import Decoder, Encoder
from layercast.shared.codec.entropy import CdfTables, SteGaussianConditional, SymbolChecksum, snap_means


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


def pointwise_rows(net: nn.Sequential, rows: Tensor) -> Tensor:
    """``net`` (1×1 convolutions and activations) on ``rows`` (N, C_in), one position per row:
    one matrix product per layer, the values ``net`` gives at those positions of a grid."""
    for m in net:
        rows = F.linear(rows, m.weight[:, :, 0, 0], m.bias) if isinstance(m, nn.Conv2d) else m(rows)
    return rows


def masked_conv_at(conv: CheckerboardMaskedConv2d, x: Tensor, at: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """The checkerboard-masked convolution of ``x`` (zero padding) at positions ``at`` (image, row,
    column), as rows (N, C_out): only its unmasked taps are read, each one matrix product."""
    bi, ii, jj = at
    kh, kw = conv.kernel_size
    ph, pw = conv.padding
    xp = F.pad(x, (pw, pw, ph, ph))
    taps = conv.mask[0, 0].nonzero().tolist()
    cols = torch.cat([xp[bi, :, ii + di, jj + dj] for di, dj in taps], dim=1)  # (N, taps · C_in)
    weight = torch.cat([conv.weight[:, :, di, dj] for di, dj in taps], dim=1)
    return F.linear(cols, weight, conv.bias)


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
    def _params_at(
        self, k: int, side: Tensor, ch_ctx: Tensor | None, sp_ctx: Tensor, at: tuple[Tensor, Tensor, Tensor]
    ) -> Tensor:
        """Group k's parameter network at positions ``at`` only, as rows (N, outputs); ``sp_ctx`` is
        already rows."""
        bi, ii, jj = at
        parts = (
            [side[bi, :, ii, jj], sp_ctx]
            if ch_ctx is None
            else [side[bi, :, ii, jj], ch_ctx[bi, :, ii, jj], sp_ctx]
        )
        return pointwise_rows(self.params[k], torch.cat(parts, dim=1))

    def _steps(self, side: Tensor, code_fn) -> Tensor:
        """Run the 2·len(groups) coding steps; ``code_fn(k, sel, scales, means) -> y_hat values at sel``
        (each (B, c, positions of ``sel`` in raster order)). The parameter networks and the spatial
        context run at the step's positions only: what ``forward`` computes there."""
        b, _, h, w = side.shape
        mask = anchor_mask(h, w, side.device)
        y_hats: list[Tensor] = []
        for k, c in enumerate(self.groups):
            ch_ctx = self._channel_ctx(k, y_hats)
            y_hat_k = side.new_zeros(b, c, h, w)
            for sel in (mask, ~mask):
                ii, jj = sel.nonzero(as_tuple=True)
                n = len(ii)
                at = (torch.arange(b, device=side.device).repeat_interleave(n), ii.repeat(b), jj.repeat(b))
                if sel is mask:
                    sp_ctx = side.new_zeros(b * n, 2 * c)
                else:  # the anchors decoded so far (the masked convolution reads nothing else)
                    sp_ctx = masked_conv_at(self.spatial[k], y_hat_k, at)
                out = self._params_at(k, side, ch_ctx, sp_ctx, at).reshape(b, n, -1).transpose(1, 2)
                scales, means = out.chunk(2, dim=1)
                y_hat_k[:, :, sel] = code_fn(k, sel, scales, snap_means(means))
            y_hats.append(y_hat_k)
        return torch.cat(y_hats, dim=1)

    def _symbols(self, y: Tensor, means: Tensor) -> Tensor:
        """The integers coded for ``y`` around ``means`` (rounding; P-frames add a dead zone)."""
        return torch.round(y - means)

    def compress(
        self, y: Tensor, side: Tensor, encoders: list[Encoder], checksums: list[SymbolChecksum]
    ) -> Tensor:
        """Encode ``y`` (B images) into the per-image encoders; returns ŷ exactly as the decoder will see it."""
        t = self.tables()
        groups = y.split(self.groups, dim=1)

        def code(k: int, sel: Tensor, scales: Tensor, means: Tensor) -> Tensor:
            symbols = self._symbols(groups[k][:, :, sel], means).int()
            sym_np = symbols.cpu().numpy().reshape(y.shape[0], -1)
            indexes = self.gaussian.build_indexes(scales).cpu().numpy().reshape(y.shape[0], -1)
            for i in range(y.shape[0]):
                encoders[i].encode(sym_np[i], indexes[i], t)
                checksums[i].update(sym_np[i])
            return symbols.to(means.dtype) + means

        return self._steps(side, code)

    def decompress(self, side: Tensor, decoders: list[Decoder], checksums: list[SymbolChecksum]) -> Tensor:
        """Decode ŷ with the same steps as ``compress``; ``side`` fixes the batch and spatial size."""
        t = self.tables()

        def code(k: int, sel: Tensor, scales: Tensor, means: Tensor) -> Tensor:
            indexes = self.gaussian.build_indexes(scales)
            idx_np = indexes.cpu().numpy().reshape(indexes.shape[0], -1)
            out = torch.empty(indexes.shape, dtype=torch.int32)
            for i in range(side.shape[0]):
                values = decoders[i].decode(idx_np[i], t)
                checksums[i].update(values)
                out[i] = torch.from_numpy(values).reshape(indexes.shape[1:])
            return out.to(device=means.device, dtype=means.dtype) + means

        return self._steps(side, code)
