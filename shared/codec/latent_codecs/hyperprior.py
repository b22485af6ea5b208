"""Hyperprior latent codec, optionally conditioned on another latent.

Ballé et al., "Variational image compression with a scale hyperprior", ICLR
2018, with ELIC's space-channel context for ``y``::

            ┌──── h_a ──── z ── Q ── EB ── ẑ ── h_s ──┐
            │                                          ▼
    y ──────┴───────────────────────────► SCCTX(y | side) ─► ŷ
                                              ▲
    condition (Ŷ_b) ──── c ───────────────────┘   (enhancement layer only)

With ``condition_channels`` > 0 the side parameters are ``[h_s(ẑ), c(Ŷ_b)]``:
the enhancement latent is coded with ``h(Y_e | Ŷ_b)``. Passing a zero
condition gives the standalone lower bound of the paper.

Coding writes ẑ then ŷ into one entropy-coded stream per image (``coder.Encoder``), with the
entropy parameters of ŷ from the integer model in ``integer``
(:mod:`~layercast.shared.codec.intparams`; set by the codec that loads the checkpoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from layercast.shared.codec import intfast
from layercast.shared.codec.coder import Decoder, Encoder
from layercast.shared.codec.entropy import CdfTables, SteEntropyBottleneck, SymbolChecksum
from layercast.shared.codec.intfast import FastEntropy
from layercast.shared.codec.intparams import IntegerEntropy
from layercast.shared.codec.latent_codecs.context import SpaceChannelContextCodec
from layercast.shared.codec.transforms import HyperAnalysis, HyperSynthesis


class ConditionEncoder(nn.Module):
    """c: features of the conditioning latent at the same resolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.ELU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class HyperpriorLatentCodec(nn.Module):
    """y ↔ (ẑ, ŷ) with a factorised prior on z and SCCTX on y."""

    def __init__(
        self,
        latent_channels: int,
        hyper_channels: int,
        groups: Sequence[int],
        condition_channels: int = 0,
    ) -> None:
        super().__init__()
        if sum(groups) != latent_channels:
            raise ValueError(f"channel groups {list(groups)} do not add up to M = {latent_channels}")
        side = 2 * latent_channels
        self.h_a = HyperAnalysis(latent_channels, hyper_channels)
        self.h_s = HyperSynthesis(hyper_channels, side)
        self.z_entropy = SteEntropyBottleneck(hyper_channels)
        self.condition = ConditionEncoder(condition_channels, side) if condition_channels else None
        self.y_codec = SpaceChannelContextCodec(groups, side * (2 if condition_channels else 1))
        self._z_tables: CdfTables | None = None
        #: The integer entropy-parameter model coding runs on (``intparams.derive`` or a checkpoint's).
        self.integer: IntegerEntropy | None = None

    def _integer(self) -> IntegerEntropy:
        if self.integer is None:
            raise RuntimeError(
                "this latent codec has no integer entropy model: load it through ScalableCodec"
            )
        return self.integer

    def _side(self, z_hat: Tensor, condition: Tensor | None) -> Tensor:
        side = self.h_s(z_hat)
        if self.condition is not None:
            if condition is None:
                raise ValueError("this latent codec is conditional: pass the conditioning latent")
            side = torch.cat([side, self.condition(condition.to(side.dtype))], dim=1)
        return side

    def forward(self, y: Tensor, condition: Tensor | None = None) -> dict[str, Any]:
        z = self.h_a(y)
        z_hat, z_lik = self.z_entropy(z)
        out = self._forward_y(y, self._side(z_hat, condition), condition)
        return {**out, "likelihoods": {"y": out["likelihoods"]["y"], "z": z_lik}}

    def _forward_y(self, y: Tensor, side: Tensor, condition: Tensor | None) -> dict[str, Any]:
        return self.y_codec(y, side)

    def _compress_y(
        self,
        y: Tensor,
        z_sym: Tensor,
        condition: Tensor | None,
        encoders: list[Encoder],
        checksums: list[SymbolChecksum],
    ) -> Tensor:
        integer = self._integer()
        side, fast = self._side_input(integer, z_sym, condition, tuple(y.shape[2:]))
        return self.y_codec.compress(y, side, encoders, checksums, integer, fast)

    def _decompress_y(
        self,
        z_sym: Tensor,
        shape: tuple[int, int],
        condition: Tensor | None,
        decoders: list[Decoder],
        checksums: list[SymbolChecksum],
    ) -> Tensor:
        integer = self._integer()
        side, fast = self._side_input(integer, z_sym, condition, shape)
        return self.y_codec.decompress(side, decoders, checksums, integer, fast)

    def _side_input(
        self, integer: IntegerEntropy, z_sym: Tensor, condition: Tensor | None, shape: tuple[int, int]
    ) -> tuple[Tensor, FastEntropy | None]:
        """The integer side input, channels-last for the fast path on the CPU (:mod:`intfast`)."""
        fast = FastEntropy.of(integer, self.y_codec.groups) if intfast.usable(z_sym.device) else None
        if fast is not None:
            return fast.side(z_sym, condition, shape), fast
        return integer.side(z_sym, condition, shape), None

    # ------------------------------------------------------------------ coding
    def _tables(self) -> CdfTables:
        if self._z_tables is None:
            self._z_tables = CdfTables.of(self.z_entropy)
        return self._z_tables

    def invalidate_tables(self) -> None:
        self._z_tables = None
        self.y_codec.invalidate_tables()

    def z_shape(self, y_shape: tuple[int, int]) -> tuple[int, int]:
        return (y_shape[0] + 3) // 4, (y_shape[1] + 3) // 4

    def _z_symbols(self, y: Tensor, z: Tensor, condition: Tensor | None) -> Tensor:
        """The symbols of ẑ the encoder codes: ``round(z − median)``."""
        return torch.round(z - self.z_entropy._get_medians()).int()

    @torch.no_grad()
    def compress(self, y: Tensor, condition: Tensor | None = None) -> dict[str, Any]:
        """Returns ``{"strings": [bytes per image], "shape": (h, w) of y, "y_hat", "checksums": [int]}``."""
        y = y.float()
        n = y.shape[0]
        encoders = [Encoder() for _ in range(n)]
        checksums = [SymbolChecksum() for _ in range(n)]
        t = self._tables()
        z = self.h_a(y)
        z_sym = self._z_symbols(y, z, condition)
        sym_np = z_sym.cpu().numpy().reshape(n, -1)
        indexes = self.z_entropy._build_indexes(z[:1].size()).numpy().reshape(-1)
        for i in range(n):
            encoders[i].encode(sym_np[i], indexes, t)
            checksums[i].update(sym_np[i])
        y_hat = self._compress_y(y, z_sym, condition, encoders, checksums)
        return {
            "strings": [e.flush() for e in encoders],
            "shape": tuple(y.shape[2:]),
            "y_hat": y_hat,
            "checksums": [c.value for c in checksums],
        }

    @torch.no_grad()
    def decompress(
        self, strings: list[bytes], shape: tuple[int, int], condition: Tensor | None = None
    ) -> dict[str, Any]:
        """Inverse of ``compress``; returns ``{"y_hat", "checksums"}``."""
        device = self.h_s.net[0].weight.device
        n = len(strings)
        zh, zw = self.z_shape(shape)
        c = self.z_entropy.channels
        decoders = [Decoder(bytes(s)) for s in strings]
        checksums = [SymbolChecksum() for _ in range(n)]
        t = self._tables()
        indexes = self.z_entropy._build_indexes((1, c, zh, zw)).numpy().reshape(-1)
        z_sym = torch.empty((n, c, zh, zw), dtype=torch.int32)
        for i in range(n):
            values = decoders[i].decode(indexes, t)
            checksums[i].update(values)
            z_sym[i] = torch.from_numpy(values).reshape(c, zh, zw)
        y_hat = self._decompress_y(z_sym.to(device), tuple(shape), condition, decoders, checksums)
        return {"y_hat": y_hat, "checksums": [c.value for c in checksums]}
