"""Integer networks: the entropy parameters computed exactly on every device.

Ballé, Johnston, Minnen, "Integer networks for data compression with latent-variable models",
ICLR 2019. A trained float layer becomes integers after training (post-training quantisation):

* weights: per output channel, ``w_int = round(W · s_in / s_w)`` with ``|w_int| ≤ W_MAX`` (8 bits),
  where ``s_in`` is the scale of each input column (activations are fixed point, ``a = a_int · s_in``);
* activations: per tensor, ``s = 2^-f`` (a power of two), ``|a_int| ≤ A_MAX`` (12 bits, exact in
  float32, TF32 and float16);
* bias: integers in the accumulator's scale ``s_w``.

The accumulator ``Σ w_int · a_int + b_int`` is a sum of integers. Held in float32 it is exact under
ANY summation order (BLAS, cuBLAS, any thread count or batch) while every partial sum stays below
2^24; :class:`Linear` splits K into chunks whose bound ``Σ |w_int| · max|a_int|`` (per output
channel) is below 2^24 and adds the chunk results as int64. Convolutions are gathers (unfold,
fold, taps) around those matrix products, never a convolution algorithm (Winograd and FFT are not
exact). Between layers the accumulator is requantised in int64, ``(acc · M + 2^(S-1)) >> S``
(round half up), and ELU is a lookup table over the clamped integer domain (it saturates at −1).

Everything here is stored as integers (``state`` / ``from_state``), so the integer model is part of
a checkpoint and of its model id.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

#: Integers below this are exact in float32, so are all partial sums bounded by it.
EXACT = 2**24
#: Weight magnitude bound (8-bit signed).
W_MAX = 127
#: Activation magnitude bound (12-bit signed): exact in float32, and in TF32 / float16 inputs too.
A_MAX = 2047
#: The requantisation's products ``acc · M`` stay below this (int64).
_PRODUCT_LIMIT = 2**62
#: The dtype the matrix products run in: any dtype that holds integers below ``EXACT`` exactly
#: gives the same integers (``compute_dtype`` switches it, e.g. to check that with float64).
_COMPUTE = [torch.float32]


class compute_dtype:  # noqa: N801 - used as a context manager
    """``with compute_dtype(torch.float64): ...`` runs the integer layers' products in that dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __enter__(self) -> None:
        _COMPUTE.append(self.dtype)

    def __exit__(self, *exc) -> None:
        _COMPUTE.pop()


def frac_bits(max_abs: float, a_max: int = A_MAX, margin: float = 1.5) -> int:
    """The fixed point ``f`` (``a = a_int · 2^-f``) that holds ``margin · max_abs`` within ``a_max``."""
    if not math.isfinite(max_abs) or max_abs <= 0:
        return 0
    return max(-16, min(24, math.floor(math.log2(a_max / (margin * max_abs)))))


def round_shift(x: Tensor, shift: int) -> Tensor:
    """``round(x / 2^shift)``, halves up, for int64 ``x`` (a left shift for negative ``shift``)."""
    if shift <= 0:
        return x << -shift
    return (x + (1 << (shift - 1))) >> shift


def to_fixed(grid_values: Tensor, grid_bits: int, f: int, a_max: int = A_MAX) -> Tensor:
    """Values held as int64 multiples of ``2^-grid_bits`` to the fixed point ``f``, clamped (exact)."""
    return round_shift(grid_values, grid_bits - f).clamp_(-a_max, a_max)


@dataclass
class Linear:
    """``acc = cols @ weight + bias`` with integer ``weight`` (K, C_out), ``bias`` (C_out,) int64,
    exact in float32 chunk by chunk (``splits``: the chunks' column boundaries)."""

    weight: Tensor  # float32, integer-valued
    bias: Tensor  # int64
    splits: list[int]
    acc_max: int  # bound of |acc|, bias included
    group: int = 1  # weight columns per output channel (a transposed convolution's taps)
    stride: int = 1  # a transposed convolution's stride: taps of one phase meet in one output

    @classmethod
    def quantise(
        cls, w: Tensor, b: Tensor | None, in_scale: Tensor, in_max: Tensor, group: int = 1, stride: int = 1
    ) -> tuple[Linear, Tensor]:
        """From a float weight (C_out·group, K) acting on columns of scale ``in_scale`` (K,) and
        integer bound ``in_max`` (K,); returns the layer and its accumulator scale per output
        channel. ``group`` consecutive rows make one output channel (a transposed convolution's
        k·k taps, added by F.fold): they share a scale, and the bound counts them all."""
        w = w.detach().double().cpu()
        we = w * in_scale.double()[None]
        n_out = w.shape[0] // group
        s_w = we.reshape(n_out, -1).abs().amax(1) / W_MAX
        if b is not None:  # a channel of (near) zero weights still carries its bias
            s_w = torch.maximum(s_w, b.detach().double().cpu().abs() / 2**30)
        s_w = s_w.clamp_min(2.0**-60)
        wq = torch.round(we / s_w.repeat_interleave(group)[:, None]).clamp_(-W_MAX, W_MAX)
        bq = torch.zeros(n_out, dtype=torch.int64)
        if b is not None:
            bq = torch.round(b.detach().double().cpu() / s_w).clamp_(-(2**40), 2**40).long()
        # each column's share of each output's bound
        contrib = _phase_sums(wq.abs() * in_max.double()[None], group, stride)
        cums = torch.cat([torch.zeros(contrib.shape[0], 1, dtype=torch.float64), contrib.cumsum(1)], dim=1)
        splits, total = [0], 0.0
        while splits[-1] < w.shape[1]:  # greedy: each chunk as long as its bound allows
            a = splits[-1]
            over = ((cums[:, a + 1 :] - cums[:, a : a + 1]).amax(0) >= EXACT).nonzero()
            b = a + (int(over[0]) if len(over) else w.shape[1] - a)
            b = max(b, a + 1)
            total += float((cums[:, b] - cums[:, a]).max())
            splits.append(b)
        acc_max = int(total) + int(bq.abs().max()) + 1
        return cls(wq.t().float().contiguous(), bq, splits, acc_max, group, stride), s_w

    def chunk_bounds(self, in_max: Tensor) -> list[float]:
        """Each chunk's largest possible partial sum (what must stay below ``EXACT``)."""
        contrib = _phase_sums(self.weight.double().abs().t() * in_max.double()[None], self.group, self.stride)
        return [
            float(contrib[:, a:b].sum(1).max())
            for a, b in zip(self.splits[:-1], self.splits[1:], strict=True)
        ]

    def products(self, cols: Tensor, post: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """Σ over chunks of ``post(cols[:, chunk] @ weight[chunk])`` as int64 (bias not added)."""
        dtype = _COMPUTE[-1]
        if dtype == torch.float32 and cols.is_cuda and torch.get_float32_matmul_precision() == "medium":
            dtype = torch.float64  # "medium" lets cuBLAS take bfloat16 inputs: integers to 256 only
        cols = cols.to(dtype)
        w = self.weight.to(device=cols.device, dtype=dtype)
        acc = None
        for a, b in zip(self.splits[:-1], self.splits[1:], strict=True):
            part = cols[:, a:b] @ w[a:b]
            if post is not None:
                part = post(part)
            part = part.to(torch.int64)
            acc = part if acc is None else acc + part
        return acc  # type: ignore[return-value]

    def __call__(self, cols: Tensor) -> Tensor:
        return self.products(cols) + self.bias.to(cols.device)

    def state(self, prefix: str) -> dict[str, Tensor]:
        return {
            f"{prefix}.weight": self.weight.to(torch.int8),
            f"{prefix}.bias": compact_ints(self.bias),
            f"{prefix}.splits": torch.tensor(self.splits, dtype=torch.int64),
            f"{prefix}.meta": torch.tensor([self.acc_max, self.group, self.stride], dtype=torch.int64),
        }

    @classmethod
    def from_state(cls, sd: dict[str, Tensor], prefix: str) -> Linear:
        return cls(
            sd[f"{prefix}.weight"].float(),
            sd[f"{prefix}.bias"].long(),
            sd[f"{prefix}.splits"].tolist(),
            *sd[f"{prefix}.meta"].tolist(),
        )


def compact_ints(t: Tensor) -> Tensor:
    """``t`` (integers) in the smallest of int16 / int32 / int64 that holds it: how tables are stored."""
    for dtype in (torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if t.numel() == 0 or (int(t.min()) >= info.min and int(t.max()) <= info.max):
            return t.to(dtype)
    return t.clone()


def _phase_sums(contrib: Tensor, group: int, stride: int) -> Tensor:
    """Rows (C_out·group, K) of |w|·max|a| → the bound's rows (outputs, K): with ``group`` k·k taps
    of a transposed convolution of ``stride``, one output element receives the taps of one phase
    (``ky ≡ kx ≡`` const mod ``stride``) only, so the taps of each phase are summed."""
    if group == 1:
        return contrib
    k = math.isqrt(group)
    taps = contrib.reshape(-1, k, k, contrib.shape[1])
    phases = [taps[:, a::stride, b::stride].sum((1, 2)) for a in range(stride) for b in range(stride)]
    return torch.cat(phases)


def _multiplier(ratio: Tensor, acc_max: int) -> tuple[Tensor, int]:
    """``M, S`` with ``M / 2^S ≈ ratio`` (per channel) and ``acc_max · M < 2^62``."""
    top = float(ratio.max())
    m_bits = max(1, min(31, math.floor(math.log2(_PRODUCT_LIMIT / max(acc_max, 1)))))
    shift = max(0, math.floor(m_bits - 1 - math.log2(max(top, 1e-30))))
    shift = min(shift, 62)
    return torch.round(ratio.double() * 2.0**shift).long(), shift


@dataclass
class Requant:
    """int64 accumulator (…, C_out) in scale ``s_acc`` → integers on the grid ``2^-f``:
    ``q = (acc · M + 2^(S-1)) >> S`` clamped to ``[lo, hi]``, then ``lut`` for q < 0 when set (ELU)."""

    mult: Tensor  # int64 (C_out,)
    shift: int
    lo: int
    hi: int
    lut: Tensor | None = None  # int64: value of q = lo + i
    bits: int = 0  # the output grid: integers in units of 2^-bits
    _table: Tensor | None = field(default=None, repr=False, compare=False)

    @classmethod
    def to_grid(
        cls, s_acc: Tensor, f: int, acc_max: int, *, elu: bool = False, limit: int = A_MAX
    ) -> Requant:
        mult, shift = _multiplier(s_acc.double() * 2.0**f, acc_max)
        if not elu:
            return cls(mult, shift, -limit, limit, None, f)
        s = 2.0**-f
        depth = math.ceil(math.log(2.0 / s) / s)  # below -depth·s, ELU is -1 to within half a step
        q = torch.arange(-depth, 1, dtype=torch.float64)
        lut = torch.round(torch.expm1(q * s) / s).long()
        return cls(mult, shift, -depth, limit, lut, f)

    @property
    def out_min(self) -> int:
        return int(self.lut[0]) if self.lut is not None else self.lo

    def __call__(self, acc: Tensor) -> Tensor:
        q = acc * self.mult.to(acc.device)
        if self.shift > 0:
            q += 1 << (self.shift - 1)
            q >>= self.shift
        q.clamp_(self.lo, self.hi)
        if self.lut is None:
            return q
        if self._table is None or self._table.device != acc.device:  # ELU over [lo, hi]: one gather
            self._table = torch.cat([self.lut, torch.arange(1, self.hi + 1)]).to(acc.device)
        q -= self.lo
        return self._table[q]

    def state(self, prefix: str) -> dict[str, Tensor]:
        sd = {
            f"{prefix}.mult": self.mult.clone(),
            f"{prefix}.meta": torch.tensor([self.shift, self.lo, self.hi, self.bits], dtype=torch.int64),
        }
        if self.lut is not None:
            sd[f"{prefix}.lut"] = compact_ints(self.lut)
        return sd

    @classmethod
    def from_state(cls, sd: dict[str, Tensor], prefix: str) -> Requant:
        shift, lo, hi, bits = sd[f"{prefix}.meta"].tolist()
        lut = sd.get(f"{prefix}.lut")
        return cls(sd[f"{prefix}.mult"].long(), shift, lo, hi, None if lut is None else lut.long(), bits)


# ---------------------------------------------------------------------- geometry
# Every convolution is written as gathers around ``Linear``: columns in, rows (N, C_out) out.


def conv_weight(weight: Tensor) -> Tensor:
    """A Conv2d weight (C_out, C_in, k, k) as (C_out, K) in F.unfold's column order."""
    return weight.reshape(weight.shape[0], -1)


def deconv_weight(weight: Tensor) -> Tensor:
    """A ConvTranspose2d weight (C_in, C_out, k, k) as (C_out·k·k, C_in): F.fold's block order."""
    return weight.permute(1, 2, 3, 0).reshape(-1, weight.shape[0])


def conv_rows(lin: Linear, x: Tensor, k: int, padding: int) -> Tensor:
    """Stride-1 convolution of the integer image ``x`` (B, C, H, W) as rows (B·H·W, C_out) int64."""
    b, c, h, w = x.shape
    cols = F.unfold(x.float(), k, padding=padding).transpose(1, 2).reshape(b * h * w, c * k * k)
    return lin(cols)


def deconv_image(lin: Linear, x: Tensor, k: int, stride: int, padding: int, c_out: int) -> Tensor:
    """Transposed convolution (output ``stride``× the input, as ``layers.deconv``) of ``x``
    (B, C, H, W) as an int64 image (B, C_out, sH, sW): one matrix product per input position,
    its k×k blocks added by F.fold (integers, exact). ``lin``'s weight is (C_in, C_out·k·k) and
    its chunk bound covers every block that overlaps an output."""
    b, c, h, w = x.shape
    cols = x.float().permute(0, 2, 3, 1).reshape(b * h * w, c)
    size = (h * stride, w * stride)

    def fold(part: Tensor) -> Tensor:
        blocks = part.reshape(b, h * w, -1).transpose(1, 2)
        return F.fold(blocks, size, k, padding=padding, stride=stride)

    return lin.products(cols, fold) + lin.bias.to(x.device)[:, None, None]


def rows_to_image(rows: Tensor, b: int, h: int, w: int) -> Tensor:
    return rows.reshape(b, h, w, -1).permute(0, 3, 1, 2)


def image_to_rows(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def taps_cols(
    x: Tensor, taps: list[tuple[int, int]], padding: int, at: tuple[Tensor, Tensor, Tensor]
) -> Tensor:
    """Columns of a (masked) convolution at positions ``at``: each listed tap's C_in values."""
    bi, ii, jj = at
    xp = F.pad(x.float(), (padding, padding, padding, padding))
    return torch.cat([xp[bi, :, ii + di, jj + dj] for di, dj in taps], dim=1)


def taps_weight(weight: Tensor, taps: list[tuple[int, int]]) -> Tensor:
    return torch.cat([weight[:, :, di, dj] for di, dj in taps], dim=1)


# ---------------------------------------------------------------------- calibration


class RangeMeter:
    """Largest |input| and |output| of chosen modules over the calibration runs (forward hooks)."""

    def __init__(self, modules: list[torch.nn.Module]) -> None:
        self.inputs: dict[int, float] = {}
        self.outputs: dict[int, float] = {}
        self._handles = [m.register_forward_hook(self._hook) for m in modules]

    def _hook(self, module, args, output) -> None:
        key = id(module)
        self.inputs[key] = max(self.inputs.get(key, 0.0), float(args[0].detach().abs().max()))
        self.outputs[key] = max(self.outputs.get(key, 0.0), float(output.detach().abs().max()))

    def input_of(self, module: torch.nn.Module) -> float:
        return self.inputs.get(id(module), 0.0)

    def output_of(self, module: torch.nn.Module) -> float:
        return self.outputs.get(id(module), 0.0)

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def fixed_bound(f_or_bound: int, n: int) -> Tensor:
    return torch.full((n,), float(f_or_bound), dtype=torch.float64)


#: Layer geometries: 1×1 on rows, k×k stride-1 same-padding, transposed (×stride), masked taps at
#: chosen positions (run by the caller).
KINDS = ("rows", "conv", "deconv", "taps")


@dataclass
class Layer:
    """One linear layer of a chain with its geometry and what follows it (``out``: requantisation
    to the next layer's grid, ELU included; ``None`` for a head, which reads the accumulator)."""

    kind: str  # one of KINDS
    k: int
    stride: int
    padding: int
    lin: Linear
    out: Requant | None

    def apply(self, x: Tensor) -> Tensor:
        """Rows (N, C) → int64 rows, or an image (B, C, H, W) → an int64 image."""
        if self.kind == "rows":
            acc = self.lin(x.float())
            return self.out(acc) if self.out is not None else acc
        b, _, h, w = x.shape
        if self.kind == "conv":
            acc = conv_rows(self.lin, x, self.k, self.padding)
            oh, ow = h, w
        else:
            img = deconv_image(self.lin, x, self.k, self.stride, self.padding, self.lin.bias.numel())
            oh, ow = img.shape[2:]
            acc = image_to_rows(img)
        if self.out is not None:
            acc = self.out(acc)
        return rows_to_image(acc, b, oh, ow)

    def state(self, prefix: str) -> dict[str, Tensor]:
        sd = {f"{prefix}.geometry": torch.tensor([KINDS.index(self.kind), self.k, self.stride, self.padding])}
        sd.update(self.lin.state(f"{prefix}.lin"))
        if self.out is not None:
            sd.update(self.out.state(f"{prefix}.out"))
        return sd

    @classmethod
    def from_state(cls, sd: dict[str, Tensor], prefix: str) -> Layer:
        kind, k, stride, padding = sd[f"{prefix}.geometry"].tolist()
        out = Requant.from_state(sd, f"{prefix}.out") if f"{prefix}.out.mult" in sd else None
        return cls(KINDS[kind], k, stride, padding, Linear.from_state(sd, f"{prefix}.lin"), out)


@dataclass
class Chain:
    """A converted ``nn.Sequential``: integer layers, run on rows or on images."""

    layers: list[Layer]
    acc_scale: Tensor | None = None  # the last accumulator's scale per channel, when it is a head's

    def __call__(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer.apply(x)
        return x

    def state(self, prefix: str) -> dict[str, Tensor]:
        sd: dict[str, Tensor] = {f"{prefix}.n": torch.tensor(len(self.layers))}
        for i, layer in enumerate(self.layers):
            sd.update(layer.state(f"{prefix}.{i}"))
        return sd

    @classmethod
    def from_state(cls, sd: dict[str, Tensor], prefix: str) -> Chain:
        return cls([Layer.from_state(sd, f"{prefix}.{i}") for i in range(int(sd[f"{prefix}.n"]))])


def convert(
    seq: torch.nn.Sequential,
    meter: RangeMeter,
    in_scale: Tensor,
    in_max: Tensor,
    out_bits: int | None,
    *,
    rows: bool = False,
) -> Chain:
    """An integer :class:`Chain` of ``seq`` (Conv2d / ConvTranspose2d layers, each optionally
    followed by ELU) whose input has the per-channel scale ``in_scale`` and integer bound
    ``in_max``. Hidden activations take the fixed point of their calibrated range (``meter``); the
    output is requantised to ``2^-out_bits`` (clamped to ``A_MAX``), or, with ``out_bits=None``,
    left as the accumulator with its scale in ``Chain.acc_scale`` (for a head). ``rows``: the
    1×1 convolutions run on rows (N, C)."""
    mods = list(seq)
    linears = [i for i, m in enumerate(mods) if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    layers: list[Layer] = []
    scale, bound = in_scale.double(), in_max.double()
    acc_scale = None
    for n, i in enumerate(linears):
        m = mods[i]
        elu = i + 1 < len(mods) and isinstance(mods[i + 1], torch.nn.ELU)
        k = m.kernel_size[0]
        if isinstance(m, torch.nn.ConvTranspose2d):
            kind, group = "deconv", k * k
            lin, s_acc = Linear.quantise(deconv_weight(m.weight), m.bias, scale, bound, group, m.stride[0])
        else:
            kind, group = ("rows" if rows and k == 1 else "conv"), 1
            cols_scale, cols_bound = scale.repeat_interleave(k * k), bound.repeat_interleave(k * k)
            lin, s_acc = Linear.quantise(conv_weight(m.weight), m.bias, cols_scale, cols_bound)
        last = n == len(linears) - 1
        if last and out_bits is None:
            out, acc_scale = None, s_acc
        else:
            f = out_bits if last else frac_bits(meter.input_of(mods[linears[n + 1]]), margin=1.5)
            if elu:
                f = min(f, 10)  # ELU's −1 must fit: 2^f ≤ A_MAX
            out = Requant.to_grid(s_acc, f, lin.acc_max, elu=elu)
            n_out = s_acc.numel()
            scale = torch.full((n_out,), 2.0**-f, dtype=torch.float64)
            bound = torch.full((n_out,), float(max(out.hi, -out.out_min)), dtype=torch.float64)
        layers.append(Layer(kind, k, m.stride[0], m.padding[0], lin, out))
    return Chain(layers, acc_scale)
