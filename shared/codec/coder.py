"""The entropy coder: range ANS over the checkpoint's integer CDF tables, compiled with numba.

One stream per image and layer. A coding step hands the coder numpy arrays of symbols and of
table indexes (one CompressAI CDF table per symbol); the whole step runs in compiled code
(:mod:`layercast.shared.codec.ans`).

Per step, the stream holds,
for each table the step uses, in table order, a *run*: the symbols of that table in coding
order (a stable sort of the indexes, which the decoder knows before it decodes the step), coded
i.i.d. with the table's categorical model. A value outside its table is coded as the table's
last entry, the *escape*; after the run's symbols come, for its escapes in order, the bit length
``n`` of the escape's raw value (uniform over 0..32), then the ``n - 1`` bits below its leading
one (uniform, at most 16 bits per symbol: first every escape's low chunk, then the high chunks).

Raw value of an escape, as CompressAI's coder maps it: ``-2·v - 1`` below the table
(``v < 0``), ``2·(v - max)`` at or above its last entry ``max = length - 2``.

The categorical models are the tables' probabilities ``diff(cdf)`` quantised to 24 bits exactly as
constriction's ``Categorical(diff(cdf), perfect=False)`` does (an integer procedure, the same on
every machine), and the stream is word for word the one constriction's ``AnsCoder`` writes for the
same symbols and models (its tests compare them). The compressed words are little-endian uint32.
"""

from __future__ import annotations

import numpy as np

from layercast.shared.codec.entropy import CdfTables
from layercast.shared.errors import CorruptBitstream

#: 2**24, the models' total frequency (``ans.ONE``; :mod:`~layercast.shared.codec.ans` imports numba,
#: so it loads on the first coding, not with the codec).
_ONE = 1 << 24
#: The tables of a uniform symbol's step (it names no table entry).
_NO_CDF, _NO_RCP = np.zeros(1, np.uint32), np.zeros(1, np.uint64)


def _ans():
    from layercast.shared.codec import ans

    return ans


def _flat(a, name: str) -> np.ndarray:
    """``a`` as a contiguous int32 or int64 vector (the kernels' two compiled types), values kept."""
    a = np.asarray(a)
    if a.dtype.kind not in "iub":
        raise ValueError(f"{name} must be integers, not {a.dtype}")
    return np.ascontiguousarray(a.reshape(-1), dtype=np.int32 if a.dtype == np.int32 else np.int64)


class Encoder:
    """Collects the steps of one stream; ``flush`` codes them (ANS is last in, first out)."""

    def __init__(self) -> None:
        self._steps: list[tuple[np.ndarray, object]] = []  # (coded symbols, their Quantised tables)

    def encode(self, symbols: np.ndarray, indexes: np.ndarray, tables: CdfTables) -> None:
        symbols, indexes = _flat(symbols, "symbols"), _flat(indexes, "indexes")
        if symbols.shape != indexes.shape:
            raise ValueError("one table index per symbol")
        q, ans = tables.quantised, _ans()
        status, coded = ans.encode_step(symbols, indexes, q.cdf, q.start, q.lengths, q.offsets)
        if status == ans.BAD_TABLE_INDEX:
            raise ValueError(f"table index out of range 0..{q.lengths.size - 1}")
        if status == ans.ESCAPE_TOO_LARGE:
            raise ValueError("a symbol is too far outside its table (over 31 bits)")
        self._steps.append((coded, q))

    def encode_uniform(self, value: int, size: int) -> None:
        """One integer in ``0..size-1``, uniform (``size`` from 2 to 2**24 - 1)."""
        if not (0 <= value < size and 2 <= size < _ONE):
            raise ValueError(f"{value} is not within 0..{size - 1} (size from 2 to 2**24 - 1)")
        ans = _ans()
        start, freq = ans.uniform(value, size)
        self._steps.append((np.array([ans.DIRECT | freq << 24 | start], np.uint64), None))

    def flush(self) -> bytes:
        ans = _ans()
        words = np.empty(sum(c.size for c, _ in self._steps), np.uint32)
        state, m = np.zeros(1, np.uint64), 0
        for coded, q in reversed(self._steps):
            cdf, rcp = (q.cdf, q.rcp) if q is not None else (_NO_CDF, _NO_RCP)
            m = ans.ans_encode(coded, cdf, rcp, words, m, state)
        self._steps = []
        return ans.ans_finish(words, m, int(state[0])).astype("<u4", copy=False).tobytes()


class Decoder:
    """Decodes the steps of one stream in the encoder's order; garbage raises ``CorruptBitstream``
    or yields wrong symbols (which the container's symbol CRC rejects), never reads out of bounds."""

    def __init__(self, data: bytes) -> None:
        if len(data) % 4:
            raise CorruptBitstream(f"entropy-coded payload of {len(data)} bytes is not whole 32-bit words")
        self._words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        start = _ans().initial_state(self._words)
        if start is None:
            raise CorruptBitstream("entropy decoding failed: the payload ends in a zero word")
        self._state = np.array([start[0]], np.uint64)
        self._cursor = np.array([start[1]], np.int64)

    def decode(self, indexes: np.ndarray, tables: CdfTables) -> np.ndarray:
        try:
            indexes = _flat(indexes, "indexes")
        except ValueError as exc:
            raise CorruptBitstream(f"entropy decoding failed: {exc}") from None
        q, ans = tables.quantised, _ans()
        out = np.empty(indexes.size, np.int32)
        status = ans.decode_step(
            self._words, self._cursor, self._state, indexes, q.cdf, q.start, q.lengths, q.offsets, q.lut, out
        )
        if status == ans.BAD_TABLE_INDEX:
            raise CorruptBitstream(
                f"entropy decoding failed: table index out of range 0..{q.lengths.size - 1}"
            )
        return out

    def decode_uniform(self, size: int) -> int:
        """The inverse of :meth:`Encoder.encode_uniform`."""
        if not 2 <= size < _ONE:
            raise CorruptBitstream(f"entropy decoding failed: uniform size {size} outside 2..2**24 - 1")
        return int(_ans().decode_uniform(self._words, self._cursor, self._state, size))
