"""The integer entropy networks run fast on the CPU: the same integers as
:class:`~layercast.shared.codec.intparams.IntegerEntropy`'s reference layers, with less work.

* **Channels-last float32 images, no im2col.** A stride-1 k×k convolution reads a zero-padded
  image (B, H + 2P, W + 2P, C) whose rows are ``Wp = W + 2P`` wide; output ``(i, j)`` at row
  ``i · Wp + j`` takes tap ``(di, dj)`` from input row ``i · Wp + j + (di + P - p) · Wp + dj + P -
  p``, so each tap is one matrix product over a contiguous slice of the flattened image (the
  ``Wp - W`` columns past each row's end are computed and dropped). Activations stay float32
  integers from one layer to the next (exact: ``|a| ≤ A_MAX``).
* **Chunks re-cut for this order.** A chunk is any set of weight rows whose bound
  ``Σ |w| · A_MAX`` (per output channel) stays below ``EXACT``: every partial sum of its products,
  in any order and with the accumulation into the chunk's buffer (``addmm_``), is then an exact
  float32 integer, so the chunks' int64 total is the reference's. The rows are cut greedily in
  the order they are read here (tap-major for convolutions; a parameter network's input blocks
  side, channel context, spatial context in turn), and a block that is all zeros (the spatial
  context at the anchors) is skipped, its rows not read.
* **One pass per layer after the products** (:mod:`~layercast.shared.codec.intkernels`):
  chunks summed (int32 where the layer's bound ``acc_max`` allows, else int64), requantised,
  clamped and looked up in one compiled loop that writes the next layer's input in place (into
  the padded buffer's interior, or the side input's channels); the heads' scale indexes and
  means in the same way, laid out as the coder reads them; a step's ŷ and its context inputs
  written by one pass.
* **Gathers by row.** A coding step takes its positions' rows of the channels-last side input
  and channel context with ``index_select`` (one contiguous copy per row), the spatial context's
  12 taps as rows of the padded ŷ image in one ``index_select``.

Used on CPU tensors (``usable``); elsewhere the reference layers run. ``tests/shared/codec/
test_intfast.py`` checks both give the same integers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from layercast.shared.codec import intnet
from layercast.shared.codec.intnet import A_MAX, EXACT, Chain, Layer, Linear, Requant, to_fixed
from layercast.shared.codec.intparams import GRID_BITS, SIGMOID_BITS, from_grid, grid

#: Set to False (``reference_only``) to run the reference layers on the CPU too.
_ENABLED = [True]


class reference_only:  # noqa: N801 - used as a context manager
    """``with reference_only(): ...`` codes with the reference integer layers (tests compare)."""

    def __enter__(self) -> None:
        _ENABLED.append(False)

    def __exit__(self, *exc) -> None:
        _ENABLED.pop()


def usable(device: torch.device) -> bool:
    return _ENABLED[-1] and device.type == "cpu"


_KERNELS: list = []  # the compiled epilogues' module, once imported


def _kernels():
    if not _KERNELS:
        from layercast.shared.codec import intkernels  # numba loads on the first coding

        _KERNELS.append(intkernels)
    return _KERNELS[0]


def _dtype() -> torch.dtype:
    return intnet._COMPUTE[-1]


def _cut(contrib: Tensor) -> list[tuple[int, int]]:
    """Greedy row ranges of ``contrib`` (rows, outputs: each row's share of each output's bound)
    whose sums stay below ``EXACT`` for every output (``Linear.quantise``'s rule, over rows)."""
    cums = torch.cat([torch.zeros(1, contrib.shape[1], dtype=torch.float64), contrib.cumsum(0)])
    k = contrib.shape[0]
    ranges, a = [], 0
    while a < k:
        over = ((cums[a + 1 :] - cums[a : a + 1]).amax(1) >= EXACT).nonzero()
        b = max(a + (int(over[0]) if len(over) else k - a), a + 1)
        ranges.append((a, b))
        a = b
    return ranges


@dataclass
class _Piece:
    source: int  # which input (a tap or a block)
    k0: int  # its columns k0:k1
    k1: int
    weight: Tensor  # (k1 - k0, C_out) in the compute dtype


class _Products:
    """``Σ_sources input_s @ W_s`` in chunks, each chunk's products accumulated in one buffer."""

    def __init__(self, weights: list[Tensor]) -> None:
        """``weights[s]`` (K_s, C_out), integer-valued, in the order the sources are read."""
        self.weights = weights
        self.n_out = weights[0].shape[1]
        rows = torch.cat(weights).double()
        owner = [(s, k) for s, w in enumerate(weights) for k in range(w.shape[0])]
        self.chunks: list[list[tuple[int, int, int]]] = []  # (source, k0, k1) per chunk
        for a, b in _cut(rows.abs() * A_MAX):
            pieces: list[tuple[int, int, int]] = []
            for s, k in owner[a:b]:
                if pieces and pieces[-1][0] == s:
                    pieces[-1] = (s, pieces[-1][1], k + 1)
                else:
                    pieces.append((s, k, k + 1))
            self.chunks.append(pieces)
        self._typed: dict[torch.dtype, list[list[_Piece]]] = {}

    def _pieces(self, dtype: torch.dtype) -> list[list[_Piece]]:
        if dtype not in self._typed:
            self._typed[dtype] = [
                [_Piece(s, k0, k1, self.weights[s][k0:k1].to(dtype).contiguous()) for s, k0, k1 in chunk]
                for chunk in self.chunks
            ]
        return self._typed[dtype]

    def run(self, source: Callable[[int], Tensor], m: int, out: Tensor) -> None:
        """``out[c, :m]`` = chunk c's products; ``source(s)`` is input s (m, K_s)."""
        inputs: dict[int, Tensor] = {}
        whole = out.shape[1] == m
        for c, chunk in enumerate(self._pieces(out.dtype)):
            dst = out[c] if whole else out[c, :m]
            for n, p in enumerate(chunk):
                a = inputs.get(p.source)
                if a is None:
                    a = inputs[p.source] = source(p.source)
                if p.k1 - p.k0 != a.shape[1]:  # a piece of the source's columns
                    a = a[:, p.k0 : p.k1]
                if n == 0:
                    torch.mm(a, p.weight, out=dst)
                else:
                    dst.addmm_(a, p.weight)


def _acc_dtype(lin: Linear) -> np.dtype:
    """int32 when the layer's bound on ``|acc|`` (bias included) fits it, else int64."""
    return np.dtype(np.int32) if lin.acc_max < 2**31 else np.dtype(np.int64)


@dataclass
class _Epilogue:
    """A :class:`Requant` as the compiled pass's arguments."""

    bias: np.ndarray  # in the accumulator's dtype (``_acc_dtype``)
    mult: np.ndarray
    shift: int
    lo: int
    hi: int
    table: Tensor  # float64: the value of q = lo + i (ELU's table, or the identity)
    typed: dict[torch.dtype, np.ndarray] = field(default_factory=dict)  # ``table`` per compute dtype

    @classmethod
    def of(cls, lin: Linear, out: Requant) -> _Epilogue:
        values = torch.arange(out.lo, out.hi + 1, dtype=torch.int64)
        if out.lut is not None:
            values = torch.cat([out.lut, torch.arange(1, out.hi + 1)])
        return cls(
            lin.bias.numpy().astype(_acc_dtype(lin)),
            out.mult.numpy().astype(np.int64),
            out.shift,
            out.lo,
            out.hi,
            values.double(),
        )

    def __call__(self, parts: Tensor, out: Tensor) -> None:
        """``parts`` (chunks, R', W', C), ``out`` (R, W, C) any strides, both in one dtype."""
        table = self.typed.get(out.dtype)
        if table is None:
            table = self.typed[out.dtype] = self.table.to(out.dtype).numpy()
        acc = np.empty(self.bias.size, self.bias.dtype)
        _kernels().requant(
            parts.numpy(), self.bias, self.mult, self.shift, self.lo, self.hi, table, out.numpy(), acc
        )


class _Conv:
    """A stride-1 k×k convolution layer on padded channels-last images (module docstring)."""

    def __init__(self, layer: Layer) -> None:
        assert layer.kind == "conv" and layer.out is not None
        k, lin = layer.k, layer.lin
        c_in = lin.weight.shape[0] // (k * k)
        taps = lin.weight.reshape(c_in, k, k, -1)
        self.k, self.p, self.c_in = k, layer.padding, c_in
        self.taps = [(di, dj) for di in range(k) for dj in range(k)]
        self.products = _Products([taps[:, di, dj] for di, dj in self.taps])
        self.epilogue = _Epilogue.of(lin, layer.out)
        self.c_out = lin.bias.numel()

    def __call__(self, x: Tensor, pad: int, c0: int, out: Tensor) -> None:
        """``x`` (B, H + 2·pad, W + 2·pad, ≥ c0 + C_in) zero-padded (``pad`` ≥ the layer's), its
        channels ``c0 : c0 + C_in`` the input; ``out`` (B, H, W, C_out) any strides."""
        b_n, hp, wp, _ = x.shape
        h, w = hp - 2 * pad, wp - 2 * pad
        m = (h - 1) * wp + w
        parts = x.new_empty(len(self.products.chunks), h * wp, self.c_out)
        shift = pad - self.p
        for b in range(b_n):
            flat = x[b].reshape(hp * wp, -1)[:, c0 : c0 + self.c_in]

            def source(t: int, flat: Tensor = flat) -> Tensor:
                di, dj = self.taps[t]
                start = (di + shift) * wp + dj + shift
                return flat[start : start + m]

            self.products.run(source, m, parts)
            self.epilogue(parts.view(-1, h, wp, self.c_out), out[b])


class _Deconv:
    """A transposed convolution (stride s, output s× the input, as ``layers.deconv``) as s² phase
    convolutions on the padded channels-last input: output ``(s·m + a, s·n + b)`` is the sum over
    the taps ``t = a + p - s·d`` in ``0..k-1`` of input ``(m + dy, n + dx)`` (zero outside), each
    phase with chunks of its own bound (its taps only, as ``Linear``'s phase bound)."""

    def __init__(self, layer: Layer) -> None:
        assert layer.kind == "deconv" and layer.out is not None
        k, s, p, lin = layer.k, layer.stride, layer.padding, layer.lin
        self.c_in = lin.weight.shape[0]
        self.c_out = lin.bias.numel()
        weights = lin.weight.reshape(self.c_in, self.c_out, k, k)
        self.stride = s
        self.phases: list[tuple[int, int, list[tuple[int, int]], _Products]] = []
        reach = 0
        for a in range(s):
            for b in range(s):
                taps, ws = [], []
                for ty in range(k):
                    for tx in range(k):
                        if (a + p - ty) % s or (b + p - tx) % s:
                            continue
                        dy, dx = (a + p - ty) // s, (b + p - tx) // s
                        taps.append((dy, dx))
                        ws.append(weights[:, :, ty, tx])
                        reach = max(reach, abs(dy), abs(dx))
                self.phases.append((a, b, taps, _Products(ws)))
        self.p = reach  # the input padding the taps need
        self.epilogue = _Epilogue.of(lin, layer.out)

    def __call__(self, x: Tensor, pad: int, c0: int, out: Tensor) -> None:
        """``x`` (B, H + 2·pad, W + 2·pad, ≥ c0 + C_in) zero-padded (``pad`` ≥ ``self.p``); ``out``
        (B, s·H, s·W, C_out) any strides."""
        b_n, hp, wp, _ = x.shape
        h, w = hp - 2 * pad, wp - 2 * pad
        m = (h - 1) * wp + w
        s = self.stride
        for a, b, taps, products in self.phases:
            parts = x.new_empty(len(products.chunks), h * wp, self.c_out)
            for i in range(b_n):
                flat = x[i].reshape(hp * wp, -1)[:, c0 : c0 + self.c_in]

                def source(t: int, flat: Tensor = flat, taps: list[tuple[int, int]] = taps) -> Tensor:
                    dy, dx = taps[t]
                    start = (dy + pad) * wp + dx + pad
                    return flat[start : start + m]

                products.run(source, m, parts)
                self.epilogue(parts.view(-1, h, wp, self.c_out), out[i, a::s, b::s])


def _convs(chain: Chain) -> list[_Conv | _Deconv] | None:
    """The chain's layers as channels-last operations, or None when one is not a stride-1
    convolution or a transposed convolution followed by a requantisation."""
    ops: list[_Conv | _Deconv] = []
    for layer in chain.layers:
        if layer.out is None:
            return None
        if layer.kind == "conv" and layer.stride == 1:
            ops.append(_Conv(layer))
        elif layer.kind == "deconv":
            ops.append(_Deconv(layer))
        else:
            return None
    return ops


def _run_convs(convs: list[_Conv | _Deconv], x: Tensor, pad: int, c0: int, out: Tensor) -> None:
    """A chain of convolutions from the padded ``x`` into ``out`` (B, H', W', C); hidden layers in
    zero-padded buffers of their own."""
    b_n, hp, wp, _ = x.shape
    h, w = hp - 2 * pad, wp - 2 * pad
    for n, conv in enumerate(convs):
        if n == len(convs) - 1:
            conv(x, pad, c0, out)
            return
        if isinstance(conv, _Deconv):
            h, w = h * conv.stride, w * conv.stride
        nxt = convs[n + 1].p
        hidden = x.new_zeros(b_n, h + 2 * nxt, w + 2 * nxt, conv.c_out)
        conv(x, pad, c0, hidden[:, nxt : nxt + h, nxt : nxt + w])
        x, pad, c0 = hidden, nxt, 0


def _padded(image: Tensor, pad: int, dtype: torch.dtype) -> Tensor:
    """An integer image (B, C, H, W) as a zero-padded channels-last buffer of ``dtype``."""
    b_n, c, h, w = image.shape
    out = torch.zeros(b_n, h + 2 * pad, w + 2 * pad, c, dtype=dtype)
    out[:, pad : pad + h, pad : pad + w] = image.permute(0, 2, 3, 1)
    return out


def _apply(convs: list[_Conv | _Deconv], image: Tensor, out: Tensor) -> None:
    """The chain on an integer image (B, C, H, W) into ``out`` (B, H', W', C'), in ``out``'s dtype."""
    _run_convs(convs, _padded(image, convs[0].p, out.dtype), convs[0].p, 0, out)


def _out_grid(convs: list[_Conv | _Deconv], h: int, w: int) -> tuple[int, int]:
    """The grid a chain writes for an h×w input (its transposed convolutions upsample)."""
    for op in convs:
        if isinstance(op, _Deconv):
            h, w = h * op.stride, w * op.stride
    return h, w


class _RowNetwork:
    """A parameter network's 1×1 layers on rows: the first reads the blocks (side, [channel
    context,] spatial context) in turn and skips the spatial context when it is zero; the hidden
    layers are requantised by their epilogues; :meth:`last_parts` gives the last layer's chunks,
    which the subclass's head turns into scale indexes and means. The last layer's bias and the
    head's thresholds are kept in the accumulator's dtype: with int32 sums (|acc| < 2^31) a
    threshold clamped to int32's range compares with every sum as the int64 threshold does."""

    def __init__(self, chain: Chain, head, blocks: list[int]) -> None:
        self.blocks = blocks
        first = chain.layers[0].lin.weight
        edges = np.cumsum([0, *blocks]).tolist()
        split = [first[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]
        self.first = {True: _Products(split), False: _Products(split[:-1])}  # with / without spatial
        self.rest = [_Products([layer.lin.weight]) for layer in chain.layers[1:]]
        self.epilogues = [_Epilogue.of(layer.lin, layer.out) for layer in chain.layers[:-1]]  # type: ignore[arg-type]
        self.widths = [layer.lin.bias.numel() for layer in chain.layers]
        last = chain.layers[-1]
        self.bias = last.lin.bias.numpy().astype(_acc_dtype(last.lin))
        info = np.iinfo(self.bias.dtype)
        t = head.thresholds.clamp(int(info.min), int(info.max)).numpy().T
        self.thresholds = np.ascontiguousarray(t.astype(self.bias.dtype))  # (levels, c)

    def last_parts(self, blocks: list[Tensor | None], rows: int) -> Tensor:
        """The last layer's chunks (chunks, rows, 1, width) of ``rows`` rows of ``blocks``, each
        (rows, K_s) in the compute dtype, the last None where the spatial context is zero."""
        dtype = blocks[0].dtype  # type: ignore[union-attr]
        x: Tensor | None = None
        for i, prods in enumerate([self.first[blocks[-1] is not None], *self.rest]):
            parts = torch.empty(len(prods.chunks), rows, 1, self.widths[i], dtype=dtype)
            if i == 0:
                prods.run(lambda s: blocks[s], rows, parts.view(len(prods.chunks), rows, -1))  # type: ignore[arg-type,return-value]
            else:
                prods.run(lambda s, x=x: x, rows, parts.view(len(prods.chunks), rows, -1))  # type: ignore[misc]
            if i < len(self.epilogues):
                x = torch.empty(rows, 1, self.widths[i], dtype=dtype)
                self.epilogues[i](parts, x)
                x = x.view(rows, -1)
        return parts

    def scratch(self) -> np.ndarray:
        return np.empty(self.bias.size, self.bias.dtype)


class _Params(_RowNetwork):
    """An intra parameter network on rows with its head (``intkernels.head``)."""

    def __init__(self, chain: Chain, head, blocks: list[int]) -> None:
        super().__init__(chain, head, blocks)
        self.means = head.means
        self.means_mult = head.means.mult.numpy().astype(np.int64)

    def __call__(self, blocks: list[Tensor | None], b_n: int, n: int) -> tuple[Tensor, Tensor]:
        """(indexes int32 (B, c, n), means int64 grid steps (B, c, n)) of rows ordered image by image."""
        parts = self.last_parts(blocks, b_n * n)
        c = self.thresholds.shape[1]
        indexes = torch.empty(b_n, c, n, dtype=torch.int32)
        means = torch.empty(b_n, c, n, dtype=torch.int64)
        m = self.means
        _kernels().head(
            parts.numpy(),
            self.bias,
            self.thresholds,
            self.means_mult,
            m.shift,
            m.lo,
            m.hi,
            indexes.numpy(),
            means.numpy(),
            self.scratch(),
        )
        return indexes, means


@functools.lru_cache(maxsize=8)
def _positions(h: int, w: int) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], ...]:
    """The two checkerboard steps of an h×w grid: (mask, rows, columns, raster index) each."""
    ii = torch.arange(h)[:, None].expand(h, w)
    jj = torch.arange(w)[None, :].expand(h, w)
    anchors = (ii + jj) % 2 == 0
    out = []
    for sel in (anchors, ~anchors):
        i, j = ii[sel], jj[sel]
        out.append((sel, i, j, i * w + j))
    return tuple(out)


class FastEntropy:
    """An :class:`~layercast.shared.codec.intparams.IntegerEntropy` prepared for the fast path
    (``of``: built once per model, ``None`` when a network's shape is not one it runs)."""

    def __init__(self, model, groups: list[int]) -> None:
        self.model = model
        self.groups = groups
        self.h_s = _convs(model.h_s)
        self.condition = _convs(model.condition) if model.condition is not None else None
        self.channel = [_convs(net) if net is not None else None for net in model.channel]
        side = model.h_s.layers[-1].lin.bias.numel()
        if model.condition is not None:
            side += model.condition.layers[-1].lin.bias.numel()
        self.side_channels = side
        self.params = []
        for k, c in enumerate(groups):
            blocks = [side, *([2 * c] if k else []), 2 * c]
            self.params.append(_Params(model.params[k], model.heads[k], blocks))
        self.spatial = [_Products([layer.lin.weight]) for layer in model.spatial]
        self.spatial_out = [_Epilogue.of(layer.lin, layer.out) for layer in model.spatial]  # type: ignore[arg-type]

    @classmethod
    def of(cls, model, groups: list[int]) -> FastEntropy | None:
        fast = getattr(model, "_fast", None)
        if fast is None:
            fast = cls(model, groups)
            ok = fast.h_s is not None and all(
                net is not None for k, net in enumerate(fast.channel) if model.channel[k] is not None
            )
            ok = ok and (model.condition is None or fast.condition is not None)
            ok = ok and all(head.gate is None for head in model.heads)
            ok = ok and all(
                layer.out is not None and len(p.layers) >= 2
                for layer, p in zip(model.spatial, model.params, strict=True)
            )
            fast = fast if ok else False
            model._fast = fast
        return fast or None

    # ------------------------------------------------------------------ inputs
    def side(self, z_sym: Tensor, condition: Tensor | None, shape: tuple[int, int]) -> Tensor:
        """The side input (B, h, w, C) channels-last, compute dtype: h_s(ẑ) cropped to the
        latent's grid, then the condition's features (``IntegerEntropy.side``'s integers)."""
        m = self.model
        dtype = _dtype()
        z = m.z_input(z_sym)
        hs = self.h_s
        assert hs is not None
        b_n = z.shape[0]
        h, w = shape
        full_h, full_w = _out_grid(hs, z.shape[2], z.shape[3])
        out = torch.empty(b_n, h, w, self.side_channels, dtype=dtype)
        n_hs = hs[-1].c_out
        if (full_h, full_w) == (h, w):
            target = out[..., :n_hs]
        else:  # computed on h_s's whole grid, then cropped
            target = torch.empty(b_n, full_h, full_w, n_hs, dtype=dtype)
        _apply(hs, z, target)
        if target.shape[1:3] != (h, w):
            out[..., :n_hs] = target[:, :h, :w]
        if self.condition is not None and condition is not None:
            _apply(self.condition, m.cond_input(condition), out[..., n_hs:])
        return out

    # ------------------------------------------------------------------ steps
    def steps(self, side: Tensor, code_fn, y_hat: Tensor) -> None:
        """The coding steps of ``SpaceChannelContextCodec._steps`` on the channels-last ``side``;
        ŷ goes into ``y_hat`` (B, M, h, w)."""
        m = self.model
        b_n, h, w, cs = side.shape
        dtype = side.dtype
        pad = 2  # the spatial context's 5×5 taps; the channel context's 3×3 read inside it
        hp, wp = h + 2 * pad, w + 2 * pad
        y_in = torch.zeros(b_n, hp, wp, sum(self.groups), dtype=dtype)  # ŷ as context inputs
        side_rows = side.reshape(-1, cs)
        steps = _positions(h, w)
        offset = 0
        for k, c in enumerate(self.groups):
            ch_rows = None
            if k:
                ch = torch.empty(b_n, h, w, 2 * c, dtype=dtype)
                convs = self.channel[k]
                assert convs is not None
                _run_convs(convs, y_in, pad, 0, ch)
                ch_rows = ch.reshape(-1, 2 * c)
            for anchors, (sel, ii, jj, pos) in zip((True, False), steps, strict=True):
                n = ii.numel()
                rows = pos if b_n == 1 else (torch.arange(b_n)[:, None] * (h * w) + pos[None]).reshape(-1)
                blocks: list[Tensor | None] = [side_rows.index_select(0, rows)]
                if ch_rows is not None:
                    blocks.append(ch_rows.index_select(0, rows))
                blocks.append(None if anchors else self._spatial(k, y_in, offset, ii, jj, pad))
                indexes, means = self.params[k](blocks, b_n, n)
                values = code_fn(k, sel, indexes, means.float() / 2**8)
                _kernels().scatter(
                    values.float().contiguous().numpy(),
                    ii.numpy(),
                    jj.numpy(),
                    8 - m.y_bits,
                    A_MAX,
                    pad,
                    y_in.numpy(),
                    offset,
                    y_hat.numpy(),
                )
            offset += c

    def _spatial(self, k: int, y_in: Tensor, offset: int, ii: Tensor, jj: Tensor, pad: int) -> Tensor:
        """The spatial context's integers at the positions ``(ii, jj)`` of every image."""
        b_n, hp, wp, _ = y_in.shape
        c = self.groups[k]
        taps = self.model.taps[k]
        n = ii.numel()
        rows = _tap_rows(b_n, hp - 2 * pad, wp - 2 * pad, pad, self.model.spatial[k].padding, tuple(taps))
        flat = y_in.reshape(-1, y_in.shape[3])[:, offset : offset + c]
        cols = flat.index_select(0, rows).reshape(b_n * n, len(taps) * c)
        prods = self.spatial[k]
        parts = torch.empty(len(prods.chunks), b_n * n, 1, 2 * c, dtype=y_in.dtype)
        prods.run(lambda s: cols, b_n * n, parts.view(len(prods.chunks), b_n * n, -1))
        out = torch.empty(b_n * n, 1, 2 * c, dtype=y_in.dtype)
        self.spatial_out[k](parts, out)
        return out.view(b_n * n, 2 * c)


@functools.lru_cache(maxsize=32)
def _tap_rows(b_n: int, h: int, w: int, pad: int, p: int, taps: tuple[tuple[int, int], ...]) -> Tensor:
    """The rows of a padded (B, h + 2·pad, w + 2·pad, C) image, flattened, that the spatial
    context's ``taps`` (its padding ``p``) read at the non-anchors: image by image, position by
    position (``_positions``), tap by tap."""
    _, ii, jj, _ = _positions(h, w)[1]
    hp, wp = h + 2 * pad, w + 2 * pad
    base = (ii + pad - p) * wp + (jj + pad - p)
    tap_offsets = torch.tensor([di * wp + dj for di, dj in taps])
    return (torch.arange(b_n)[:, None, None] * (hp * wp) + base[None, :, None] + tap_offsets).reshape(-1)


class _GatheredDeconv(_Deconv):
    """A :class:`_Deconv` whose phases gather their taps side by side (one ``cat`` of the row
    slices) for one matrix product per chunk (each phase's tap-major weight rows cut as one
    block): a few larger products instead of one per tap, for h_s's small hyper grids."""

    def __init__(self, op: _Deconv) -> None:
        """``op``'s layer, its phases' products re-cut."""
        self.__dict__.update(op.__dict__)
        self.phases = [(a, b, taps, _Products([torch.cat(prods.weights)])) for a, b, taps, prods in op.phases]

    def __call__(self, x: Tensor, pad: int, c0: int, out: Tensor) -> None:
        b_n, hp, wp, _ = x.shape
        h, w = hp - 2 * pad, wp - 2 * pad
        m = (h - 1) * wp + w
        s = self.stride
        for a, b, taps, products in self.phases:
            parts = x.new_empty(len(products.chunks), h * wp, self.c_out)
            starts = [(dy + pad) * wp + dx + pad for dy, dx in taps]
            for i in range(b_n):
                flat = x[i].view(hp * wp, -1)[:, c0 : c0 + self.c_in]
                cols = torch.cat([flat[start : start + m] for start in starts], dim=1)
                products.run(lambda t, cols=cols: cols, m, parts)
                self.epilogue(parts.view(-1, h, wp, self.c_out), out[i, a::s, b::s])


class _ConvAt:
    """A stride-1 convolution at chosen positions of a padded channels-last image: each position's
    k×k taps gathered as one row (one ``index_select``), then one matrix product per chunk (the
    tap-major weight rows cut as one block), then the layer's epilogue."""

    def __init__(self, conv: _Conv) -> None:
        self.conv = conv
        self.products = _Products([torch.cat(conv.products.weights)])

    def __call__(self, x: Tensor, pad: int, c0: int, at: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """Rows (N, C_out) of ``x``'s dtype at ``at`` (image, row, column) of ``x`` (B, H + 2·pad,
        W + 2·pad, ≥ c0 + C_in; channels ``c0 : c0 + C_in`` the input, zero-padded)."""
        conv = self.conv
        bi, ii, jj = at
        n = bi.numel()
        if n == 0:
            return x.new_empty(0, conv.c_out)
        _, hp, wp, width = x.shape
        shift = pad - conv.p
        base = bi * (hp * wp) + (ii + shift) * wp + (jj + shift)
        offsets = _tap_offsets(tuple(conv.taps), wp)
        flat = x.view(-1, width)
        if c0 or conv.c_in != width:
            flat = flat[:, c0 : c0 + conv.c_in]
        cols = flat.index_select(0, (base[:, None] + offsets).view(-1)).view(n, -1)
        chunks = len(self.products.chunks)
        parts = x.new_empty(chunks, n, 1, conv.c_out)
        self.products.run(lambda s: cols, n, parts.view(chunks, n, -1))
        out = x.new_empty(n, 1, conv.c_out)
        conv.epilogue(parts, out)
        return out.view(n, conv.c_out)


@functools.lru_cache(maxsize=64)
def _tap_offsets(taps: tuple[tuple[int, int], ...], wp: int) -> Tensor:
    """Each tap's row offset in a flattened image ``wp`` wide."""
    return torch.tensor([di * wp + dj for di, dj in taps])


Positions = tuple[Tensor, Tensor, Tensor]


def _chain_at(
    convs: list[_ConvAt],
    x: Tensor,
    pad: int,
    c0: int,
    at: Positions,
    shape: tuple[int, int],
    reach: dict[tuple[int, ...], list[Positions]] | None = None,
) -> Tensor:
    """A chain of stride-1 convolutions (zero padding) on the padded channels-last ``x`` of an
    h×w grid, at the positions ``at`` only, as rows (N, C_out): each hidden layer is computed
    where the next one reads it (within its reach of ``at`` and inside the grid) into a zero
    buffer whose border is the next layer's padding, so every value is the dense chain's.
    ``reach`` keeps those positions for other chains of the same paddings at the same ``at``."""
    h, w = shape
    b_n = x.shape[0]
    key = tuple(op.conv.p for op in convs[1:])
    where = reach.get(key) if reach is not None else None
    if where is None:
        where = [at]
        for p in reversed(key):  # the positions each hidden layer must give
            mask = torch.zeros(b_n, 1, h, w)
            b, i, j = where[0]
            mask[b, 0, i, j] = 1.0
            mask = torch.nn.functional.max_pool2d(mask, 2 * p + 1, stride=1, padding=p)
            where.insert(0, mask[:, 0].nonzero(as_tuple=True))
        if reach is not None:
            reach[key] = where
    for n, op in enumerate(convs):
        rows = op(x, pad, c0, where[n])
        if n == len(convs) - 1:
            return rows
        p = convs[n + 1].conv.p
        hp, wp = h + 2 * p, w + 2 * p
        hidden = x.new_zeros(b_n, hp, wp, op.conv.c_out)
        b, i, j = where[n]
        hidden.view(-1, op.conv.c_out).index_copy_(0, b * (hp * wp) + (i + p) * wp + (j + p), rows)
        x, pad, c0 = hidden, p, 0
    raise AssertionError("a chain has a layer")


class _GatedParams(_RowNetwork):
    """A P-frame parameter network on rows with its gated head. The first layer reads the blocks
    (side: h_s, the reference's features, the reference; [channel context;] spatial context); the
    last layer's chunks go to one compiled pass (``intkernels.gated_head``) that gives the scale
    indexes and the gated means (``Head.__call__``)."""

    def __init__(self, chain: Chain, head, blocks: list[int]) -> None:
        assert head.gate is not None and head.sigmoid is not None
        assert head.means.lut is None and head.gate.lut is None
        super().__init__(chain, head, blocks)
        self.means_q = _requant_args(head.means)
        self.gate_q = _requant_args(head.gate)
        self.sigmoid = head.sigmoid.numpy().astype(np.int64)

    def __call__(self, blocks: list[Tensor | None], ref: Tensor) -> tuple[Tensor, Tensor]:
        """(indexes int32 (N, c), means int64 grid steps (N, c)); ``blocks`` (N, K_s) each in the
        compute dtype, the last None where the spatial context is zero; ``ref`` int64 (N, c): the
        reference's grid steps at those rows."""
        n = ref.shape[0]
        c = self.thresholds.shape[1]
        indexes = torch.empty(n, c, dtype=torch.int32)
        means = torch.empty(n, c, dtype=torch.int64)
        if n == 0:
            return indexes, means
        parts = self.last_parts(blocks, n)
        _kernels().gated_head(
            parts.numpy(),
            self.bias,
            self.thresholds,
            self.means_q,
            self.gate_q,
            self.sigmoid,
            SIGMOID_BITS,
            ref.contiguous().numpy(),
            indexes.numpy(),
            means.numpy(),
            self.scratch(),
        )
        return indexes, means


def _requant_args(q: Requant) -> tuple[np.ndarray, int, int, int]:
    return q.mult.numpy().astype(np.int64), q.shift, q.lo, q.hi


class FastChains:
    """The P-frame model (gated heads, steps at the moving positions only), which
    :class:`FastEntropy` does not run, on the fast path: :meth:`steps_at` runs a P-frame's coding
    steps channels-last (h_s's hidden layers on the hyper grid; its last layer, the reference's
    features, the channel contexts, the spatial contexts and the gated parameter networks at the
    moving positions only). ``side``, ``channel_ctx``, ``condition_at`` and ``params_at`` give its
    pieces as ``IntegerEntropy`` does (tests compare)."""

    def __init__(self, model) -> None:
        self.model = model
        self.h_s = _convs(model.h_s)
        last = self.h_s[-1] if self.h_s is not None else None
        self.h_s_last = _ConvAt(last) if isinstance(last, _Conv) and len(self.h_s) > 1 else None  # type: ignore[arg-type]
        self.h_s_hidden = [
            _GatheredDeconv(op) if isinstance(op, _Deconv) else op for op in (self.h_s or [])[:-1]
        ]
        self.channel = [_convs(net) if net is not None else None for net in model.channel]
        self.features = _at(_convs(model.condition)) if model.condition is not None else None
        self.channel_at = [_at(convs) for convs in self.channel]
        side = model.h_s.layers[-1].lin.bias.numel() if self.h_s is None else self.h_s[-1].c_out
        if self.features is not None:  # the features, then the reference
            side += self.features[-1].conv.c_out + self.features[0].conv.c_in
        blocks = [side]
        self.groups = [head.thresholds.shape[0] for head in model.heads]
        self.params = [
            _GatedParams(chain, head, [*blocks, *([2 * c] if k else []), 2 * c])
            for k, (chain, head, c) in enumerate(zip(model.params, model.heads, self.groups, strict=True))
        ]
        self.spatial = [_Products([layer.lin.weight]) for layer in model.spatial]
        self.spatial_out = [_Epilogue.of(layer.lin, layer.out) for layer in model.spatial]  # type: ignore[arg-type]
        #: every piece runs here (else the caller takes the reference layers)
        self.whole = (
            self.h_s is not None
            and self.features is not None
            and all(self.channel_at[k] is not None for k, net in enumerate(model.channel) if net is not None)
        )

    @classmethod
    def of(cls, model) -> FastChains:
        chains = getattr(model, "_fast_chains", None)
        if chains is None:
            chains = model._fast_chains = cls(model)
        return chains

    def params_at(self, k: int, rows: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        """``IntegerEntropy.params_at(k, rows, ref)``: rows of every input block."""
        x = rows.to(_dtype())
        return self.params[k](list(x.split(self.params[k].blocks, dim=1)), ref)

    def side(self, z_sym: Tensor, shape: tuple[int, int]) -> Tensor:
        """``IntegerEntropy.side(z_sym, None, shape)``: h_s(ẑ) cropped to the latent's grid."""
        return self._h_s(z_sym)[:, : shape[0], : shape[1]].permute(0, 3, 1, 2).long()

    def _h_s(self, z_sym: Tensor) -> Tensor:
        """h_s(ẑ) channels-last (B, H', W', C) on its whole grid, compute dtype."""
        assert self.h_s is not None
        z = self.model.z_input(z_sym)
        full_h, full_w = _out_grid(self.h_s, z.shape[2], z.shape[3])
        out = torch.empty(z.shape[0], full_h, full_w, self.h_s[-1].c_out, dtype=_dtype())
        _apply(self.h_s, z, out)
        return out

    def h_s_at(self, z_sym: Tensor, at: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """h_s(ẑ) at the positions ``at`` of the latent's grid, as rows (N, C) of the compute dtype:
        h_s's hidden layers on their whole grid, its last convolution at ``at`` only (its input
        is the whole grid's, so a position next to the crop reads what the dense h_s reads)."""
        assert self.h_s is not None
        if self.h_s_last is None:
            hs = self._h_s(z_sym)
            bi, ii, jj = at
            return hs.view(-1, hs.shape[3]).index_select(0, (bi * hs.shape[1] + ii) * hs.shape[2] + jj)
        z = self.model.z_input(z_sym)
        hidden_convs = self.h_s_hidden
        full_h, full_w = _out_grid(hidden_convs, z.shape[2], z.shape[3])
        p = self.h_s_last.conv.p
        hidden = torch.zeros(
            z.shape[0], full_h + 2 * p, full_w + 2 * p, hidden_convs[-1].c_out, dtype=_dtype()
        )
        pad = hidden_convs[0].p
        _run_convs(
            hidden_convs, _padded(z, pad, hidden.dtype), pad, 0, hidden[:, p : p + full_h, p : p + full_w]
        )
        return self.h_s_last(hidden, p, 0, at)

    def channel_ctx(self, k: int, done: list[Tensor]) -> Tensor | None:
        """``IntegerEntropy.channel_ctx(k, done)``."""
        m = self.model
        convs = self.channel[k]
        if convs is None:
            return m.channel_ctx(k, done)
        x = m.y_input(torch.cat(done, dim=1))
        b_n, _, h, w = x.shape
        out = torch.empty(b_n, h, w, convs[-1].c_out, dtype=_dtype())
        _apply(convs, x, out)
        return out.permute(0, 3, 1, 2).long()

    def condition_at(self, ref: Tensor, at: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """``IntegerEntropy.condition_at(ref, at)`` (int64 rows) on ``ref``'s integers (B, C, h, w)."""
        convs = self.features
        assert convs is not None
        p = convs[0].conv.p
        return _chain_at(convs, _padded(ref, p, _dtype()), p, 0, at, tuple(ref.shape[2:])).long()

    def spatial_at(
        self, k: int, y_in: Tensor, pad: int, c0: int, at: tuple[Tensor, Tensor, Tensor]
    ) -> Tensor:
        """Group k's spatial context (the masked 5×5 convolution's taps) at the positions ``at``
        of the padded channels-last context inputs ``y_in`` (group k in channels ``c0 : c0 + c``),
        as rows (N, 2c) of ``y_in``'s dtype."""
        bi, ii, jj = at
        n = bi.numel()
        _, hp, wp, width = y_in.shape
        c = self.groups[k]
        if n == 0:
            return y_in.new_empty(0, 2 * c)
        p = self.model.spatial[k].padding
        base = bi * (hp * wp) + (ii + pad - p) * wp + (jj + pad - p)
        offsets = _tap_offsets(tuple(self.model.taps[k]), wp)
        flat = y_in.view(-1, width)[:, c0 : c0 + c]
        cols = flat.index_select(0, (base[:, None] + offsets).view(-1)).view(n, -1)
        prods = self.spatial[k]
        parts = y_in.new_empty(len(prods.chunks), n, 1, 2 * c)
        prods.run(lambda s: cols, n, parts.view(len(prods.chunks), n, -1))
        out = y_in.new_empty(n, 1, 2 * c)
        self.spatial_out[k](parts, out)
        return out.view(n, 2 * c)

    def steps_at(self, z_sym: Tensor, ref: Tensor, moving: Tensor, code_fn) -> Tensor:
        """``TemporalContextCodec._sparse_steps`` (same positions, same ``code_fn`` calls, same ŷ)
        from ẑ's symbols, the reference latent ``ref`` (B, M, h, w; float on the 2⁻⁸ grid) and the
        mask ``moving`` (B, 1, h, w). Every network but h_s runs at the moving positions only, held
        as rows, the anchors' first (each step's rows are then one slice): the side input (h_s, the
        reference's features, the reference) once, per channel group its channel context, per
        step the spatial context and the parameter network; the context inputs (ŷ at its fixed
        point: the reference, then each coded value) are one padded channels-last image."""
        m = self.model
        cond = self.features
        assert self.whole and cond is not None
        dtype = _dtype()
        b_n, n_ch, h, w = ref.shape
        coded = moving[:, 0]
        anchors = _positions(h, w)[0][0]
        steps = [(coded & anchors).nonzero(as_tuple=True), (coded & ~anchors).nonzero(as_tuple=True)]
        bounds = [(0, steps[0][0].numel()), (steps[0][0].numel(), steps[0][0].numel() + steps[1][0].numel())]
        at = bi, ii, jj = tuple(torch.cat([a, b]) for a, b in zip(*steps, strict=True))
        reach: dict[tuple[int, ...], list[Positions]] = {}  # the chains' hidden positions
        ref_grid = grid(ref)
        ref_int = to_fixed(ref_grid, GRID_BITS, m.c_bits)  # cond_input(ref)
        y_int = ref_int if m.y_bits == m.c_bits else to_fixed(ref_grid, GRID_BITS, m.y_bits)  # y_input(ref)
        pad = 2  # the spatial context's 5×5 taps; the channel context's 3×3 read inside it
        y_in = torch.zeros(b_n, h + 2 * pad, w + 2 * pad, n_ch, dtype=dtype)
        y_in[:, pad : pad + h, pad : pad + w] = y_int.permute(0, 2, 3, 1)
        if y_int is ref_int:  # the features read the reference as the context inputs hold it
            features = _chain_at(cond, y_in, pad, 0, at, (h, w), reach)
        else:
            p = cond[0].conv.p
            features = _chain_at(cond, _padded(ref_int, p, dtype), p, 0, at, (h, w), reach)
        side = torch.cat([self.h_s_at(z_sym, at), features, ref_int.permute(0, 2, 3, 1)[at].to(dtype)], dim=1)
        ref_steps = ref_grid.permute(0, 2, 3, 1)[at]
        y_hat = ref.float().clone(memory_format=torch.contiguous_format)
        shift = GRID_BITS - m.y_bits
        offset = 0
        for k, c in enumerate(self.groups):
            convs = self.channel_at[k]
            ch = None if convs is None else _chain_at(convs, y_in, pad, 0, at, (h, w), reach)
            for first, (a, b), step in zip((True, False), bounds, steps, strict=True):
                blocks: list[Tensor | None] = [side[a:b]] if ch is None else [side[a:b], ch[a:b]]
                blocks.append(None if first else self.spatial_at(k, y_in, pad, offset, step))
                indexes, means = self.params[k](blocks, ref_steps[a:b, offset : offset + c])
                counts = [b - a] if b_n == 1 else torch.bincount(step[0], minlength=b_n).tolist()
                values = code_fn(k, step, counts, indexes, from_grid(means))
                _kernels().scatter_rows(
                    values.float().contiguous().numpy(),
                    *(t.numpy() for t in step),
                    shift,
                    A_MAX,
                    pad,
                    y_in.numpy(),
                    offset,
                    y_hat.numpy(),
                )
            offset += c
        return y_hat


def _at(convs: list[_Conv | _Deconv] | None) -> list[_ConvAt] | None:
    """``convs`` at chosen positions (``_chain_at``) when every one is a stride-1 convolution."""
    if convs is None or not all(isinstance(op, _Conv) for op in convs):
        return None
    return [_ConvAt(op) for op in convs]  # type: ignore[arg-type]
