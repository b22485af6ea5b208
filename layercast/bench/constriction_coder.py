"""The entropy coder's layout on ``constriction``'s Python ANS: the reference the compiled coder
(:mod:`layercast.shared.codec.coder`) is compared against, byte for byte (tests) and in speed
(``layercast bench codec``). constriction is a ``[dev]`` dependency, not the codec's.

The stream layout is :mod:`layercast.shared.codec.coder`'s; the categorical models
(:func:`models`, cached on the ``CdfTables``) are constriction's ``Categorical(diff(cdf),
perfect=False)``, the uniform ones its ``Uniform``, the words those of its ``AnsCoder``.
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


def models(tables: CdfTables) -> list:
    """One constriction ``Categorical(diff(cdf), perfect=False)`` per table of ``tables``."""
    cached = getattr(tables, "_constriction_models", None)
    if cached is None:
        cat = constriction.stream.model.Categorical
        cached = [cat(np.diff(c).astype(np.float64), perfect=False) for c in tables.cdfs]
        tables._constriction_models = cached
    return cached


def _runs(indexes: np.ndarray, n_tables: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """``order`` (a stable sort by table) and ``(table, start, end)`` of each run in it."""
    if indexes.size and (indexes.min() < 0 or indexes.max() >= n_tables):
        raise ValueError(f"table index out of range 0..{n_tables - 1}")
    order = np.argsort(indexes.astype(np.uint8), kind="stable")  # a radix sort (<= 256 tables)
    counts = np.bincount(indexes, minlength=n_tables)
    ends = np.cumsum(counts)
    used = np.flatnonzero(counts)
    return order, [(r, int(ends[r] - counts[r]), int(ends[r])) for r in used.tolist()]


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
        symbols = np.asarray(symbols).reshape(-1)
        indexes = np.asarray(indexes).reshape(-1)
        if symbols.shape != indexes.shape:
            raise ValueError("one table index per symbol")
        order, runs = _runs(indexes, len(tables.cdfs))
        values = symbols.astype(np.int64)[order]
        table_models = models(tables)
        for r, start, end in runs:
            v = values[start:end] - int(tables.offsets[r])
            top = int(tables.lengths[r]) - 2
            if v.min() >= 0 and v.max() < top:
                self._chunks.append(_iid(v.astype(np.int32), table_models[r]))
                continue
            below, above = v < 0, v >= top
            self._chunks.append(_iid(np.where(below | above, top, v).astype(np.int32), table_models[r]))
            self._escapes(np.where(below, -2 * v - 1, 2 * (v - top))[below | above])

    def encode_uniform(self, value: int, size: int) -> None:
        """One integer in ``0..size-1``, uniform (``size`` below 2**24)."""
        if not 0 <= value < size < 1 << 24:
            raise ValueError(f"{value} is not within 0..{size - 1} (size below 2**24)")
        self._chunks.append(_uniform(np.array([value], dtype=np.int32), np.array([size], dtype=np.int32)))

    def _escapes(self, raw: np.ndarray) -> None:
        if (raw >= 2**32).any():
            raise ValueError("a symbol is too far outside its table (over 31 bits)")
        nbits = np.frexp(raw.astype(np.float64))[1].astype(np.int64)  # bit length, exact < 2**53
        rest = raw - np.where(raw > 0, 1 << np.maximum(nbits - 1, 0), 0)
        low_bits, high_bits = _payload_sizes(nbits)
        self._chunks.append(_iid(nbits.astype(np.int32), _BITS))
        for bits, part in ((low_bits, rest & ((1 << _CHUNK) - 1)), (high_bits, rest >> _CHUNK)):
            keep = bits > 0
            if keep.any():
                self._chunks.append(_uniform(part[keep].astype(np.int32), (1 << bits[keep]).astype(np.int32)))

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
            return self._decode(np.asarray(indexes).reshape(-1), tables)
        except (ValueError, RuntimeError, OverflowError) as exc:
            raise CorruptBitstream(f"entropy decoding failed: {exc}") from None

    def decode_uniform(self, size: int) -> int:
        """The inverse of :meth:`Encoder.encode_uniform`."""
        try:
            return int(self._coder.decode(_UNIFORM, np.array([size], dtype=np.int32))[0])
        except (ValueError, RuntimeError, OverflowError) as exc:
            raise CorruptBitstream(f"entropy decoding failed: {exc}") from None

    def _decode(self, indexes: np.ndarray, tables: CdfTables) -> np.ndarray:
        coder, table_models = self._coder, models(tables)
        order, runs = _runs(indexes, len(tables.cdfs))
        values = np.empty(indexes.size, dtype=np.int64)
        for r, start, end in runs:
            v = coder.decode(table_models[r], end - start).astype(np.int64)
            top = int(tables.lengths[r]) - 2
            escaped = v == top
            if escaped.any():
                raw = self._escapes(int(escaped.sum()))
                v[escaped] = np.where(raw % 2 == 1, -(raw + 1) // 2, raw // 2 + top)
            values[start:end] = v + int(tables.offsets[r])
        out = np.empty(indexes.size, dtype=np.int32)
        out[order] = values  # wraps a forged out-of-range value; the symbols CRC rejects it
        return out

    def _escapes(self, n: int) -> np.ndarray:
        coder = self._coder
        nbits = coder.decode(_BITS, n).astype(np.int64)
        low_bits, high_bits = _payload_sizes(nbits)
        parts = []
        for bits in (low_bits, high_bits):
            part = np.zeros(n, dtype=np.int64)
            keep = bits > 0
            if keep.any():
                part[keep] = coder.decode(_UNIFORM, (1 << bits[keep]).astype(np.int32))
            parts.append(part)
        rest = parts[0] + (parts[1] << _CHUNK)
        return np.where(nbits > 0, rest + (1 << np.maximum(nbits - 1, 0)), 0)
