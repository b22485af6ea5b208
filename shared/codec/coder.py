"""The entropy coder: ANS (``constriction``) over the checkpoint's integer CDF tables.

One stream per image and layer. A coding step hands the coder numpy arrays of symbols and of
table indexes (one CompressAI CDF table per symbol); nothing is converted to Python lists.

Per step, the stream holds

1. the step's symbols grouped by table (a stable sort of the indexes, which the decoder knows
   before it decodes the step), each group coded i.i.d. with that table's categorical model;
   a value outside a table's range is coded as the table's last entry, the *escape*;
2. for the escapes, in coding order: the bit length ``n`` of the escape's raw value
   (uniform over 0..32), then the ``n - 1`` bits below its leading one (uniform, at most
   16 bits per symbol).

Raw value of an escape, as CompressAI's coder maps it: ``-2·v - 1`` below the table
(``v < 0``), ``2·(v - max)`` at or above its last entry ``max = length - 2``.

The categorical models take the tables' probabilities ``diff(cdf) / 2**16`` (integers, exact
in float64) and quantise them with ``perfect=False``, a deterministic integer procedure inside
constriction, so encoder and decoder build the same model on every machine. The compressed
words are little-endian uint32.
"""

from __future__ import annotations

from collections.abc import Callable

import constriction
import numpy as np

from layercast.shared.codec.entropy import CdfTables
from layercast.shared.errors import CorruptBitstream

_UNIFORM = constriction.stream.model.Uniform()
_BITS = constriction.stream.model.Uniform(33)
#: Escape payloads are coded in chunks of at most this many bits (constriction's Uniform < 2**24).
_CHUNK = 16


def _runs(indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``order`` (stable sort by table) and the table and end of each run of equal tables in it."""
    order = np.argsort(indexes.astype(np.uint8), kind="stable")  # a radix sort (<= 256 tables)
    if order.size == 0:
        return order, order, order
    sorted_idx = indexes[order]
    ends = np.append(np.flatnonzero(np.diff(sorted_idx)) + 1, sorted_idx.size)
    return order, sorted_idx[ends - 1], ends


def _payload_sizes(nbits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bits of the low and high chunk of each escape with a bit length of ``nbits``."""
    payload = np.maximum(nbits - 1, 0)
    low = np.minimum(payload, _CHUNK)
    return low, payload - low


class Encoder:
    """Collects the steps of one stream; ``flush`` codes them (ANS is last in, first out)."""

    def __init__(self) -> None:
        self._chunks: list[Callable[[constriction.stream.stack.AnsCoder], None]] = []

    def encode(self, symbols: np.ndarray, indexes: np.ndarray, tables: CdfTables) -> None:
        symbols = np.asarray(symbols, dtype=np.int64).reshape(-1)
        indexes = np.asarray(indexes, dtype=np.int64).reshape(-1)
        if symbols.shape != indexes.shape:
            raise ValueError("one table index per symbol")
        top = tables.lengths[indexes] - 2
        values = symbols - tables.offsets[indexes]
        below, above = values < 0, values >= top
        coded = np.where(below | above, top, values).astype(np.int32)
        models = tables.models
        order, run_tables, ends = _runs(indexes)
        coded = coded[order]
        start = 0
        for r, end in zip(run_tables.tolist(), ends.tolist(), strict=True):
            self._chunks.append(_iid(coded[start:end], models[r]))
            start = end
        escaped = below | above
        if escaped.any():
            raw = np.where(below, -2 * values - 1, 2 * (values - top))[escaped]
            if (raw >= 2**32).any():
                raise ValueError("a symbol is too far outside its table (over 31 bits)")
            nbits = np.frexp(raw.astype(np.float64))[1].astype(np.int64)  # bit length, exact < 2**53
            nz = raw > 0
            rest = raw - np.where(nz, 1 << np.maximum(nbits - 1, 0), 0)
            low_bits, high_bits = _payload_sizes(nbits)
            self._chunks.append(_iid(nbits.astype(np.int32), _BITS))
            for bits, part in ((low_bits, rest & ((1 << _CHUNK) - 1)), (high_bits, rest >> _CHUNK)):
                keep = bits > 0
                if keep.any():
                    sizes = (1 << bits[keep]).astype(np.int32)
                    self._chunks.append(_uniform(part[keep].astype(np.int32), sizes))

    def flush(self) -> bytes:
        coder = constriction.stream.stack.AnsCoder()
        for chunk in reversed(self._chunks):
            chunk(coder)
        self._chunks = []
        return coder.get_compressed().astype("<u4").tobytes()


def _iid(symbols: np.ndarray, model) -> Callable:
    return lambda coder: coder.encode_reverse(symbols, model)


def _uniform(symbols: np.ndarray, sizes: np.ndarray) -> Callable:
    return lambda coder: coder.encode_reverse(symbols, _UNIFORM, sizes)


class Decoder:
    """Decodes the steps of one stream in the encoder's order; garbage raises ``CorruptBitstream``."""

    def __init__(self, data: bytes) -> None:
        if len(data) % 4:
            raise CorruptBitstream(f"entropy-coded payload of {len(data)} bytes is not whole 32-bit words")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        try:
            self._coder = constriction.stream.stack.AnsCoder(words)
        except (ValueError, RuntimeError) as exc:  # e.g. a last word of zero
            raise CorruptBitstream(f"entropy decoding failed: {exc}") from None

    def decode(self, indexes: np.ndarray, tables: CdfTables) -> np.ndarray:
        try:
            return self._decode(np.asarray(indexes, dtype=np.int64).reshape(-1), tables)
        except (ValueError, RuntimeError, OverflowError) as exc:
            raise CorruptBitstream(f"entropy decoding failed: {exc}") from None

    def _decode(self, indexes: np.ndarray, tables: CdfTables) -> np.ndarray:
        coder, models = self._coder, tables.models
        order, run_tables, ends = _runs(indexes)
        coded = np.empty(indexes.size, dtype=np.int64)
        start = 0
        for r, end in zip(run_tables.tolist(), ends.tolist(), strict=True):
            coded[order[start:end]] = coder.decode(models[r], end - start)
            start = end
        top = tables.lengths[indexes] - 2
        values = coded
        escaped = coded == top
        if escaped.any():
            nbits = coder.decode(_BITS, int(escaped.sum())).astype(np.int64)
            low_bits, high_bits = _payload_sizes(nbits)
            parts = []
            for bits in (low_bits, high_bits):
                part = np.zeros(nbits.shape, dtype=np.int64)
                keep = bits > 0
                if keep.any():
                    part[keep] = coder.decode(_UNIFORM, (1 << bits[keep]).astype(np.int32))
                parts.append(part)
            rest = parts[0] + (parts[1] << _CHUNK)
            raw = np.where(nbits > 0, rest + (1 << np.maximum(nbits - 1, 0)), 0)
            t = top[escaped]
            values = coded.copy()
            values[escaped] = np.where(raw % 2 == 1, -(raw + 1) // 2, raw // 2 + t)
        return (values + tables.offsets[indexes]).astype(np.int32)
