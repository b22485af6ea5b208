"""The entropy parameters of a latent codec as integer networks (:mod:`~layercast.shared.codec.intnet`).

What a decoder computes before it can read a symbol — the side information ``h_s(ẑ)`` (and, for
the enhancement layer and P-frames, the features of the conditioning latent), the channel and
spatial contexts and the parameter networks — runs here on integers, so encoder and decoder get
the same Gaussian (scale index, mean) on any device, thread count and batch by construction:

* inputs: ẑ = symbol + median as ``z·2^fz + round(median·2^fz)``; ŷ (always on the 2⁻⁸ grid of
  ``MEAN_GRID``) shifted to its fixed point ``fy`` with rounding; all clamped to ``A_MAX``;
* outputs: the means directly on the 2⁻⁸ grid (integers in units of ``MEAN_GRID``); the scale
  index by comparing the scale accumulator with integer thresholds precomputed from the scale
  table (no exp or log at coding time); a P-frame's gate through a sigmoid table, its mean
  ``ref + round(σ · (μ − ref))`` in integers.

:func:`derive` builds the integer model of a trained float latent codec from a few calibration
latents (post-training quantisation); ``state`` / ``from_state`` store it in the checkpoint as
integer tensors under ``integer.``, so they are part of the model id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from layercast.shared.codec.intnet import (
    A_MAX,
    Chain,
    Layer,
    Linear,
    RangeMeter,
    Requant,
    compact_ints,
    convert,
    frac_bits,
    round_shift,
    taps_cols,
    taps_weight,
    to_fixed,
)

#: ŷ and the means are integers in units of 2^-GRID_BITS (``entropy.MEAN_GRID``).
GRID_BITS = 8
#: Means are clamped to ±2^22 grid steps (±16384), so ŷ·2^8 stays an exact float32 integer.
MEAN_LIMIT = 2**22
#: The gate's fixed point and clamp (σ is 0 or 1 to 2^-23 beyond ±16) and σ's precision.
GATE_BITS, GATE_LIMIT, SIGMOID_BITS = 6, 16 * 2**6, 15
#: Prefix of the integer model's tensors in a checkpoint's state dict.
PREFIX = "integer."


def grid(y_hat: Tensor) -> Tensor:
    """ŷ (float, on the 2⁻⁸ grid) as int64 grid steps (exact)."""
    return torch.round(y_hat * 2**GRID_BITS).long()


def from_grid(q: Tensor) -> Tensor:
    """Grid steps back to float32 values (exact below 2^24 steps)."""
    return q.float() / 2**GRID_BITS


@dataclass
class Head:
    """The last layer's accumulator → scale indexes, means on the grid and (P-frames) the gate."""

    thresholds: Tensor  # int64 (c, levels - 1): the index is the number of thresholds ≤ acc
    means: Requant
    gate: Requant | None = None
    sigmoid: Tensor | None = None  # int64: σ(q / 2^GATE_BITS) · 2^SIGMOID_BITS for q = lo + i

    def __call__(self, acc: Tensor, ref: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(indexes int32 (N, c), means int64 grid steps (N, c)); ``ref``: the reference's grid
        steps at those rows (P-frames)."""
        c = self.thresholds.shape[0]
        t = self.thresholds.to(acc.device)
        idx = torch.searchsorted(t, acc[:, :c].t().contiguous(), right=True).t().int()
        mu = self.means(acc[:, c : 2 * c])
        if self.gate is None:
            return idx, mu
        assert ref is not None and self.sigmoid is not None
        q = self.gate(acc[:, 2 * c : 3 * c])
        sig = self.sigmoid.to(acc.device)[q - self.gate.lo]
        return idx, ref + round_shift(sig * (mu - ref), SIGMOID_BITS)

    @classmethod
    def build(cls, s_acc: Tensor, acc_max: int, levels: Tensor, c: int, gated: bool) -> Head:
        s = s_acc.double()
        th = torch.floor(levels.double()[None, :] / s[:c, None]) + 1
        thresholds = th.clamp(-(2.0**62), 2.0**62).long()
        means = Requant.to_grid(s[c : 2 * c], GRID_BITS, acc_max, limit=MEAN_LIMIT)
        if not gated:
            return cls(thresholds, means)
        gate = Requant.to_grid(s[2 * c :], GATE_BITS, acc_max, limit=GATE_LIMIT)
        q = torch.arange(-GATE_LIMIT, GATE_LIMIT + 1, dtype=torch.float64)
        sigmoid = torch.round(torch.sigmoid(q / 2**GATE_BITS) * 2**SIGMOID_BITS).long()
        return cls(thresholds, means, gate, sigmoid)

    def state(self, prefix: str) -> dict[str, Tensor]:
        sd = {f"{prefix}.thresholds": compact_ints(self.thresholds), **self.means.state(f"{prefix}.means")}
        if self.gate is not None and self.sigmoid is not None:
            sd.update(self.gate.state(f"{prefix}.gate"))
            sd[f"{prefix}.sigmoid"] = compact_ints(self.sigmoid)
        return sd

    @classmethod
    def from_state(cls, sd: dict[str, Tensor], prefix: str) -> Head:
        gated = f"{prefix}.gate.mult" in sd
        return cls(
            sd[f"{prefix}.thresholds"].long(),
            Requant.from_state(sd, f"{prefix}.means"),
            Requant.from_state(sd, f"{prefix}.gate") if gated else None,
            sd[f"{prefix}.sigmoid"].long() if gated else None,
        )


@dataclass
class IntegerEntropy:
    """The integer entropy-parameter model of one latent codec (intra, enhancement or P-frame)."""

    z_bits: int
    z_offset: Tensor  # int64 (C_z,): round(median · 2^z_bits)
    y_bits: int  # fixed point of the coded latent ŷ as a context input
    c_bits: int  # fixed point of the conditioning latent (enhancement: ŷ_b; P-frames: ŷ_{t-1})
    h_s: Chain
    condition: Chain | None
    channel: list[Chain | None]
    spatial: list[Layer]
    params: list[Chain]
    heads: list[Head]
    taps: list[list[tuple[int, int]]] = field(default_factory=list)

    # ------------------------------------------------------------------ coding
    def side(self, z_sym: Tensor, condition: Tensor | None, shape: tuple[int, int]) -> Tensor:
        """Integer side input (B, C, h, w) of the parameter networks: h_s(ẑ), cropped to the latent's
        grid, then the condition's features (dense; the enhancement layer)."""
        hs = self.h_s(self.z_input(z_sym))[:, :, : shape[0], : shape[1]]
        if self.condition is None or condition is None:
            return hs
        return torch.cat([hs, self.condition(self.cond_input(condition))], dim=1)

    def z_input(self, z_sym: Tensor) -> Tensor:
        """ẑ = symbol + median in h_s's fixed point, clamped to ``A_MAX``."""
        z = (z_sym.long() << self.z_bits) if self.z_bits >= 0 else round_shift(z_sym.long(), -self.z_bits)
        return (z + self.z_offset.to(z.device)[None, :, None, None]).clamp_(-A_MAX, A_MAX)

    def cond_input(self, condition: Tensor) -> Tensor:
        return to_fixed(grid(condition), GRID_BITS, self.c_bits)

    def y_input(self, y_hat: Tensor) -> Tensor:
        return to_fixed(grid(y_hat), GRID_BITS, self.y_bits)

    def channel_ctx(self, k: int, done: list[Tensor]) -> Tensor | None:
        net = self.channel[k]
        return None if net is None else net(self.y_input(torch.cat(done, dim=1)))

    def spatial_at(self, k: int, y_hat_k: Tensor, at: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        layer = self.spatial[k]
        cols = taps_cols(self.y_input(y_hat_k), self.taps[k], layer.padding, at)
        acc = layer.lin(cols)
        return layer.out(acc) if layer.out is not None else acc

    def condition_at(self, ref: Tensor, at: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """The condition network (conv 3×3, ELU, conv 3×3; zero padding) on the integer reference
        ``ref`` at positions ``at`` (image, row, column), as rows: each from the 5×5 patch around
        it, the hidden layer zeroed outside the grid as its padding is. The values the dense
        network gives there."""
        assert self.condition is not None
        first, second = self.condition.layers
        bi, ii, jj = at
        h, w = ref.shape[2:]
        offsets = torch.arange(5, device=ref.device)
        rows, cols = ii[:, None] + offsets, jj[:, None] + offsets  # in the 2-padded grid
        patches = F.pad(ref, (2, 2, 2, 2))[bi[:, None, None], :, rows[:, :, None], cols[:, None, :]]
        patches = patches.permute(0, 3, 1, 2).float()  # (N, C, 5, 5)
        n, c = patches.shape[:2]
        hidden = first.lin(F.unfold(patches, 3).transpose(1, 2).reshape(n * 9, c * 9))
        hidden = first.out(hidden).reshape(n, 3, 3, -1)  # type: ignore[misc]
        inside_r = (rows[:, 1:4] - 2 >= 0) & (rows[:, 1:4] - 2 < h)
        inside_c = (cols[:, 1:4] - 2 >= 0) & (cols[:, 1:4] - 2 < w)
        hidden = hidden * (inside_r[:, :, None] & inside_c[:, None, :])[..., None]
        acc = second.lin(hidden.permute(0, 3, 1, 2).reshape(n, -1).float())
        return second.out(acc) if second.out is not None else acc

    def params_at(self, k: int, rows: Tensor, ref: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Group k's (indexes, means in grid steps) from its integer input rows."""
        return self.heads[k](self.params[k](rows), ref)

    # ------------------------------------------------------------------ storage
    def state(self) -> dict[str, Tensor]:
        sd: dict[str, Tensor] = {
            "meta": torch.tensor([self.z_bits, self.y_bits, self.c_bits, len(self.params)]),
            "z_offset": self.z_offset.clone(),
            **self.h_s.state("h_s"),
        }
        if self.condition is not None:
            sd.update(self.condition.state("condition"))
        for k in range(len(self.params)):
            if self.channel[k] is not None:
                sd.update(self.channel[k].state(f"channel.{k}"))  # type: ignore[union-attr]
            sd.update(self.spatial[k].state(f"spatial.{k}"))
            sd.update(self.params[k].state(f"params.{k}"))
            sd.update(self.heads[k].state(f"head.{k}"))
        return sd

    @classmethod
    def from_state(cls, sd: dict[str, Tensor], taps: list[list[tuple[int, int]]]) -> IntegerEntropy:
        z_bits, y_bits, c_bits, n = sd["meta"].tolist()
        return cls(
            z_bits,
            sd["z_offset"].long(),
            y_bits,
            c_bits,
            Chain.from_state(sd, "h_s"),
            Chain.from_state(sd, "condition") if "condition.n" in sd else None,
            [Chain.from_state(sd, f"channel.{k}") if f"channel.{k}.n" in sd else None for k in range(n)],
            [Layer.from_state(sd, f"spatial.{k}") for k in range(n)],
            [Chain.from_state(sd, f"params.{k}") for k in range(n)],
            [Head.from_state(sd, f"head.{k}") for k in range(n)],
            taps,
        )


def spatial_taps(latent_codec) -> list[list[tuple[int, int]]]:
    return [[tuple(t) for t in conv.mask[0, 0].nonzero().tolist()] for conv in latent_codec.y_codec.spatial]


def split(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """A checkpoint's state dict as (float weights, the integer model's tensors without the prefix)."""
    weights = {k: v for k, v in sd.items() if not k.startswith(PREFIX)}
    integer = {k[len(PREFIX) :]: v for k, v in sd.items() if k.startswith(PREFIX)}
    return weights, integer


def with_integer(sd: dict[str, Tensor], model: IntegerEntropy) -> dict[str, Tensor]:
    weights, _ = split(sd)
    return {**weights, **{PREFIX + k: v for k, v in model.state().items()}}


# ---------------------------------------------------------------------- derivation


def _full(value: float, n: int) -> Tensor:
    return torch.full((n,), float(value), dtype=torch.float64)


@torch.no_grad()
def derive(latent_codec, batches: list[tuple[Tensor, Tensor | None]]) -> IntegerEntropy:
    """The integer model of a trained float ``latent_codec`` (a ``HyperpriorLatentCodec``, with a
    condition network or not, or a ``TemporalLatentCodec``), calibrated on ``batches`` of
    ``(y, condition)``: the ranges its float forward pass reaches there set every fixed point."""
    from layercast.shared.codec.temporal import TemporalLatentCodec

    lc = latent_codec
    yc = lc.y_codec
    temporal = isinstance(lc, TemporalLatentCodec)
    was_training = lc.training
    lc.eval()
    watched = [*lc.h_s.net, *yc.spatial]
    watched += [m for net in yc.channel for m in (net if isinstance(net, torch.nn.Sequential) else [])]
    watched += [m for net in yc.params for m in net]
    if lc.condition is not None:
        watched += list(lc.condition.net)
    meter = RangeMeter(watched)
    y_max = c_max = 0.0
    try:
        for y, cond in batches:
            out = lc(y, cond)
            y_max = max(y_max, float(out["y_hat"].abs().max()))
            if cond is not None:
                c_max = max(c_max, float(cond.abs().max()))
    finally:
        meter.close()
        lc.train(was_training)

    groups = yc.groups
    medians = lc.z_entropy._get_medians().detach().double().reshape(-1).cpu()
    z_bits = frac_bits(meter.input_of(lc.h_s.net[0]))
    y_bits = frac_bits(y_max)
    c_bits = frac_bits(c_max) if c_max > 0 else y_bits
    a = _full(A_MAX, 1)
    n_z = medians.numel()
    hs_bits = frac_bits(meter.output_of(lc.h_s.net[-1]))
    h_s = convert(lc.h_s.net, meter, _full(2.0**-z_bits, n_z), a.expand(n_z), hs_bits)
    side_scale = [_full(2.0**-hs_bits, lc.h_s.net[-1].out_channels)]
    condition = None
    if lc.condition is not None:
        m_in = lc.condition.net[0].in_channels
        cf_bits = frac_bits(meter.output_of(lc.condition.net[-1]))
        condition = convert(lc.condition.net, meter, _full(2.0**-c_bits, m_in), a.expand(m_in), cf_bits)
        side_scale.append(_full(2.0**-cf_bits, lc.condition.net[-1].out_channels))
        if temporal:  # the reference itself, at the condition's fixed point
            side_scale.append(_full(2.0**-c_bits, m_in))
    side_scale_t = torch.cat(side_scale)
    levels = yc.gaussian.scale_table[:-1].detach().double().cpu()

    channel: list[Chain | None] = []
    spatial: list[Layer] = []
    params: list[Chain] = []
    heads: list[Head] = []
    taps = spatial_taps(lc)
    for k, c in enumerate(groups):
        parts = [side_scale_t]
        if k:
            net = yc.channel[k]
            n_in = net[0].in_channels
            ch_bits = frac_bits(meter.output_of(net[-1]))
            channel.append(convert(net, meter, _full(2.0**-y_bits, n_in), a.expand(n_in), ch_bits))
            parts.append(_full(2.0**-ch_bits, net[-1].out_channels))
        else:
            channel.append(None)
        conv = yc.spatial[k]
        sp_bits = frac_bits(meter.output_of(conv))
        w = taps_weight(conv.weight, taps[k])
        lin, s_acc = Linear.quantise(w, conv.bias, _full(2.0**-y_bits, w.shape[1]), a.expand(w.shape[1]))
        spatial.append(
            Layer(
                "taps",
                conv.kernel_size[0],
                1,
                conv.padding[0],
                lin,
                Requant.to_grid(s_acc, sp_bits, lin.acc_max),
            )
        )
        parts.append(_full(2.0**-sp_bits, 2 * c))
        in_scale = torch.cat(parts)
        chain = convert(yc.params[k], meter, in_scale, a.expand(in_scale.numel()), None, rows=True)
        params.append(chain)
        heads.append(Head.build(chain.acc_scale, chain.layers[-1].lin.acc_max, levels, c, temporal))  # type: ignore[arg-type]
    z_offset = torch.round(medians * 2.0**z_bits).long()
    return IntegerEntropy(
        z_bits, z_offset, y_bits, c_bits, h_s, condition, channel, spatial, params, heads, taps
    )


def layers_of(model: IntegerEntropy) -> list[Layer]:
    """Every integer layer of ``model`` (each reads inputs bounded by ``A_MAX``)."""
    chains = [model.h_s, model.condition, *model.channel, *model.params]
    return [*model.spatial, *(layer for chain in chains if chain is not None for layer in chain.layers)]
