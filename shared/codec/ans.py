"""Compiled kernels of the entropy coder (numba): range ANS with constriction's ``AnsCoder`` layout.

The stream is the one ``constriction.stream.stack.AnsCoder`` writes: a 64-bit state, 32-bit words,
24-bit probabilities. Encoding runs over the stream's symbols in reverse; before a symbol of
probability ``f`` the state emits its low word when ``state >> 40 >= f``, then becomes
``(state // f) << 24 | (start + state % f)``. The words come out in emission order followed by the
final state's non-zero words, low word first. Decoding reads words from the end: the initial state
is the last word (never zero) and, unless that was the only word, the one before it; after a symbol
the state takes a word when it falls below ``2**32`` and a word is left (past the first word it
decodes on deterministically, as constriction does).

Models, in 24-bit fixed point (:func:`quantise`, :func:`uniform`):

* a categorical table (CompressAI's integer CDF with probabilities ``p = diff(cdf)``) becomes
  constriction's ``Categorical(p, perfect=False)``: with ``n`` symbols and ``scale = (2**24 - n) /
  sum(p)`` (float64), symbol ``i`` starts at ``floor(float64(p[0] + ... + p[i-1]) * scale) + i``;
* a uniform model over ``size`` values (``2 <= size <= 2**24``): each value gets ``2**24 // size``,
  the last one the rest.

A coding step (:func:`encode_step`, :func:`decode_step`) is the layout of ``coder``'s docstring:
per table the step uses, in table order, the run of its symbols, then its escapes' bit lengths,
low chunks and high chunks. The kernels take numpy arrays only and check every index that comes
from the caller or the stream (numba does not).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba.extending import intrinsic

PRECISION = 24
ONE = 1 << PRECISION
#: Escape payloads are coded in chunks of at most this many bits.
CHUNK = 16
#: An escape's bit length is uniform over 0..32.
BITS_SIZE = 33
#: Decoder lookup: quantile >> LUT_SHIFT picks one of 2**LUT_BITS buckets per table (8 measured
#: fastest: a table's 2 KiB stay in cache).
LUT_BITS = 8
LUT_SHIFT = PRECISION - LUT_BITS

#: :func:`encode_step` / :func:`decode_step` status codes.
BAD_TABLE_INDEX = -1
ESCAPE_TOO_LARGE = -2

_U = np.uint64
#: A coded symbol given by its start and frequency (a uniform one) rather than its table entry.
DIRECT = 1 << 63


def _jit(fn):
    """``numba.njit(cache=True)``. numba caches next to this file (``__pycache__``: an editable or a
    writable install), else in its user-wide folder (``~/.cache/numba``), or where ``NUMBA_CACHE_DIR``
    says; when none is writable, in a private temporary folder rather than compiling in every process."""
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # "no locator available": no writable cache location
        numba.config.CACHE_DIR = _private_cache_dir()
        return numba.njit(cache=True, nogil=True)(fn)


def _private_cache_dir() -> str:
    path = os.path.join(tempfile.gettempdir(), f"layercast-numba-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    if os.stat(path).st_uid != os.getuid():
        raise RuntimeError(f"numba cache folder {path} belongs to another user; set NUMBA_CACHE_DIR")
    return path


@dataclass(frozen=True)
class Quantised:
    """Every table of one ``CdfTables`` as the coder's 24-bit models.

    ``cdf[start[r] : start[r] + lengths[r]]`` is table ``r``'s quantised CDF (``lengths[r] - 1``
    symbols, then ``2**24``). ``lut[r, b]`` describes bucket ``b`` (quantiles ``b << LUT_SHIFT`` up
    to the next bucket's): when one symbol ``s`` holds the whole bucket, ``1 << 63 | s << 49 |
    frequency << 24 | start`` (``s`` below ``2**14``); else ``first | (last + 1) << 32``, the
    symbols holding its first and last quantile, between which the decoder searches."""

    cdf: np.ndarray  # uint32
    start: np.ndarray  # int64
    lengths: np.ndarray  # int64
    offsets: np.ndarray  # int64
    lut: np.ndarray  # uint64, (tables, 2**LUT_BITS)
    rcp: np.ndarray  # uint64, (2**64 - 1) // frequency of each cdf entry (0 after a table's last)


def quantise(cdfs: list[np.ndarray], lengths: np.ndarray, offsets: np.ndarray) -> Quantised:
    """constriction's ``Categorical(diff(cdf), perfect=False)`` of each table (module docstring)."""
    rows, luts = [], []
    for c in cdfs:
        p = np.diff(np.asarray(c, dtype=np.int64))
        n = p.size
        total = int(p.sum())
        if (p < 0).any() or total <= 0 or not 2 <= n < ONE - 1 or total >= 1 << 53:
            raise ValueError("CDF table: a non-decreasing table of 3 to 2**24 entries")
        scale = float(ONE - n) / float(total)
        cum = np.concatenate([[0], np.cumsum(p)[:-1]]).astype(np.float64)  # exact integers
        left = (cum * scale).astype(np.int64) + np.arange(n)
        row = np.append(left, ONE)
        rows.append(row)
        luts.append(_lookup(row))
    sizes = np.array([r.size for r in rows], dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    cdf = np.concatenate(rows).astype(np.uint64)
    freq = np.append(np.diff(cdf), np.uint64(0))
    freq[start + sizes - 1] = 0  # the final 2**24 of each table starts no symbol
    rcp = np.zeros(cdf.size, np.uint64)
    rcp[freq > 0] = np.uint64(2**64 - 1) // freq[freq > 0]
    return Quantised(
        cdf.astype(np.uint32), start, sizes, np.asarray(offsets, dtype=np.int64).copy(), np.stack(luts), rcp
    )


def _lookup(row: np.ndarray) -> np.ndarray:
    """The decoder's bucket entries of one quantised CDF (see :class:`Quantised`)."""
    first = np.arange(1 << LUT_BITS, dtype=np.int64) << LUT_SHIFT
    a = np.searchsorted(row, first, side="right") - 1
    b = np.searchsorted(row, first + (1 << LUT_SHIFT) - 1, side="right") - 1
    pure = (a == b) & (row.size - 1 < 1 << 14)
    a, b = a.astype(np.uint64), b.astype(np.uint64)
    lo = row[a].astype(np.uint64)
    freq = row[a + 1].astype(np.uint64) - lo
    packed = np.uint64(1 << 63) | a << np.uint64(49) | freq << np.uint64(24) | lo
    return np.where(pure, packed, a | (b + np.uint64(1)) << np.uint64(32))


def uniform(value: int, size: int) -> tuple[int, int]:
    """``(start, frequency)`` of ``value`` under the uniform model over ``size`` values."""
    per_bin = ONE // size
    if value < size - 1:
        return value * per_bin, per_bin
    return (size - 1) * per_bin, ONE - (size - 1) * per_bin


@_jit
def _uniform(value, size):
    per_bin = ONE // size
    if value < size - 1:
        return value * per_bin, per_bin
    return (size - 1) * per_bin, ONE - (size - 1) * per_bin


@_jit
def _bit_length(raw):
    n = 0
    while raw > 0:
        raw >>= 1
        n += 1
    return n


@_jit
def _bounds(indexes, n_tables):
    """The start of each table's run in the step (``n_tables + 1`` entries: a counting sort's), or
    an empty array when an index is outside 0..n_tables-1 (``n_tables`` at most 256)."""
    counts = np.zeros((4, 256), np.int64)  # four histograms: consecutive equal indexes do not stall
    n = indexes.size
    seen = _U(0)
    for i in range(0, n - n % 4, 4):
        r0, r1, r2, r3 = _U(indexes[i]), _U(indexes[i + 1]), _U(indexes[i + 2]), _U(indexes[i + 3])
        seen |= r0 | r1 | r2 | r3  # a negative index wraps far above 255
        counts[0, r0 & _U(255)] += 1
        counts[1, r1 & _U(255)] += 1
        counts[2, r2 & _U(255)] += 1
        counts[3, r3 & _U(255)] += 1
    for i in range(n - n % 4, n):
        r = _U(indexes[i])
        seen |= r
        counts[0, r & _U(255)] += 1
    bounds = np.zeros(n_tables + 1, np.int64)
    for r in range(n_tables):
        bounds[r + 1] = bounds[r] + counts[0, r] + counts[1, r] + counts[2, r] + counts[3, r]
    if seen > _U(255) or bounds[n_tables] != n:  # an index at or above n_tables is not counted
        return np.zeros(0, np.int64)
    return bounds


@_jit
def encode_step(symbols, indexes, cdf, start, lengths, offsets):
    """``(status, coded)``: the step's symbols in decoding order (uint64), each as its entry in
    ``cdf`` or, for a uniform one, ``DIRECT | frequency << 24 | start``; or a negative status code
    and an empty array."""
    bounds = _bounds(indexes, lengths.size)
    if bounds.size == 0:
        return BAD_TABLE_INDEX, np.zeros(0, np.uint64)
    coded = np.empty(symbols.size, np.uint64)
    fill = bounds[:-1].copy()
    escapes = False
    for i in range(symbols.size):  # a counting sort's scatter; unsigned indexes skip numba's wraparound
        r = _U(indexes[i])
        v = _U(symbols[i] - offsets[r])  # a value below the table wraps above it
        top = _U(lengths[r] - 2)
        if v >= top:
            escapes = True
            v = top
        j = _U(fill[r])
        fill[r] = j + _U(1)
        coded[j] = _U(start[r]) + v
    if escapes:
        return _encode_escapes(symbols, indexes, cdf, start, lengths, offsets, bounds)
    return 0, coded


@_jit
def _pack(lo, freq):
    return _U(DIRECT) | _U(freq) << _U(PRECISION) | _U(lo)


@_jit
def _encode_escapes(symbols, indexes, cdf, start, lengths, offsets, bounds):
    """:func:`encode_step` for a step with escapes (each adds up to three uniform symbols)."""
    order = np.empty(indexes.size, np.int64)
    fill = bounds[:-1].copy()
    for i in range(indexes.size):
        r = indexes[i]
        order[fill[r]] = i
        fill[r] += 1
    raws = np.empty(indexes.size, np.int64)
    coded = np.empty(4 * symbols.size, np.uint64)
    k = 0
    for r in range(lengths.size):
        top = lengths[r] - 2
        n_esc = 0
        for j in range(bounds[r], bounds[r + 1]):
            v = symbols[order[j]] - offsets[r]
            if v < 0 or v >= top:
                raw = -2 * v - 1 if v < 0 else 2 * (v - top)
                if raw >= 1 << 32:
                    return ESCAPE_TOO_LARGE, np.zeros(0, np.uint64)
                raws[n_esc] = raw
                n_esc += 1
                v = top
            coded[k] = start[r] + v
            k += 1
        for e in range(n_esc):
            coded[k] = _pack(*_uniform(_bit_length(raws[e]), BITS_SIZE))
            k += 1
        for part in range(2):
            for e in range(n_esc):
                payload = max(_bit_length(raws[e]) - 1, 0)
                low_bits = min(payload, CHUNK)
                bits = low_bits if part == 0 else payload - low_bits
                if bits > 0:
                    rest = raws[e] - (1 << payload)
                    chunk = rest & ((1 << CHUNK) - 1) if part == 0 else rest >> CHUNK
                    coded[k] = _pack(*_uniform(chunk, 1 << bits))
                    k += 1
    return 0, coded[:k]


@intrinsic
def _mulhi(typingctx, a, b):
    """The high 64 bits of the 128-bit product of two uint64."""

    def codegen(context, builder, signature, args):
        wide = ir.IntType(128)
        product = builder.mul(builder.zext(args[0], wide), builder.zext(args[1], wide))
        return builder.trunc(builder.lshr(product, ir.Constant(wide, 64)), ir.IntType(64))

    return numba.types.uint64(numba.types.uint64, numba.types.uint64), codegen


@_jit
def ans_encode(coded, cdf, rcp, words, m, state):
    """Codes the symbols of ``coded`` (decoding order; see :func:`encode_step`) in reverse onto the
    stream of ``words[:m]`` and ``state[0]``; returns the new ``m`` (one word per symbol at most).

    ``state // f`` is ``mulhi(state, (2**64 - 1) // f)`` or up to two more, found by the remainder:
    the estimate is never above the quotient, and the remainder check makes it exact."""
    st = state[0]
    for i in range(coded.size - 1, -1, -1):
        c = coded[i]
        if c >> _U(63):
            lo = c & _U(ONE - 1)
            f = (c >> _U(PRECISION)) & _U(0x1FFFFFF)
            inv = _U(0xFFFFFFFFFFFFFFFF) // f
        else:
            lo = _U(cdf[c])
            f = _U(cdf[c + _U(1)]) - lo
            inv = rcp[c]
        if (st >> _U(64 - PRECISION)) >= f:
            words[m] = np.uint32(st & _U(0xFFFFFFFF))
            m += 1
            st >>= _U(32)
        q = _mulhi(st, inv)
        r = st - q * f
        while r >= f:
            q += _U(1)
            r -= f
        st = (q << _U(PRECISION)) | (lo + r)
    state[0] = st
    return m


def ans_finish(words: np.ndarray, m: int, state: int) -> np.ndarray:
    """The stream: ``words[:m]``, then the final state's non-zero words, low word first."""
    tail = [state & 0xFFFFFFFF, state >> 32] if state >> 32 else [state] if state else []
    return np.concatenate([words[:m], np.array(tail, np.uint32)])


def initial_state(words: np.ndarray) -> tuple[int, int] | None:
    """``(state, words left)`` of a stream, or None when its last word is zero (never written)."""
    pos = words.size
    if pos == 0:
        return 0, 0
    state = int(words[pos - 1])
    if state == 0:
        return None
    pos -= 1
    if pos:
        state = state << 32 | int(words[pos - 1])
        pos -= 1
    return state, pos


@_jit
def _advance(words, pos, state, lo, freq, q):
    """``(state, pos)`` after decoding a symbol ``[lo, lo + freq)`` at quantile ``q``, refilled
    from ``words[pos - 1]`` when it fell below ``2**32`` and a word is left."""
    state = (state >> np.uint64(PRECISION)) * np.uint64(freq) + np.uint64(q - lo)
    if state < np.uint64(1 << 32) and pos > 0:
        pos -= 1
        state = (state << np.uint64(32)) | np.uint64(words[pos])
    return state, pos


@_jit
def _decode_uniform(words, pos, state, size):
    """``(value, state, pos)``: one value of the uniform model over ``size`` values."""
    q = np.int64(state & np.uint64(ONE - 1))
    per_bin = ONE // size
    s = min(q // per_bin, size - 1)
    lo, freq = _uniform(s, size)
    state, pos = _advance(words, pos, state, lo, freq, q)
    return s, state, pos


@_jit
def decode_uniform(words, cursor, state, size):
    """One value of the uniform model over ``size`` values; ``cursor[0]`` (words left) and
    ``state[0]`` carry the stream between calls."""
    s, state[0], cursor[0] = _decode_uniform(words, cursor[0], state[0], size)
    return s


@_jit
def decode_step(words, cursor, state, indexes, cdf, start, lengths, offsets, lut, out):
    """Decodes one step into ``out`` (int32, one per index); ``cursor[0]`` (words left) and
    ``state[0]`` carry the stream between calls. Returns 0 or a negative status code."""
    bounds = _bounds(indexes, lengths.size)
    if bounds.size == 0:
        return BAD_TABLE_INDEX
    values = np.empty(indexes.size, np.int64)  # in run order
    escapes = np.empty(indexes.size, np.int64)
    st, pos = state[0], cursor[0]
    for r in range(lengths.size):
        top = _U(lengths[r] - 2)
        base = _U(start[r])
        row = lut[r]
        off = offsets[r]
        n_esc = 0
        for j in range(bounds[r], bounds[r + 1]):
            q = st & _U(ONE - 1)
            entry = row[q >> _U(LUT_SHIFT)]
            if entry >> _U(63):  # the bucket's only symbol
                s = (entry >> _U(49)) & _U(0x3FFF)
                freq = (entry >> _U(24)) & _U(0x1FFFFFF)
                lo = entry & _U(ONE - 1)
            else:  # search cdf[s] <= q < cdf[e]
                s = base + (entry & _U(0xFFFFFFFF))
                e = base + (entry >> _U(32))
                while e - s > _U(1):
                    m = (s + e) >> _U(1)
                    if cdf[m] <= q:
                        s = m
                    else:
                        e = m
                lo = _U(cdf[s])
                freq = _U(cdf[s + _U(1)]) - lo
                s -= base
            st = (st >> _U(PRECISION)) * freq + (q - lo)
            if st < _U(1 << 32) and pos > 0:
                pos -= 1
                st = (st << _U(32)) | _U(words[pos])
            values[j] = np.int64(s) + off
            if s == top:
                escapes[n_esc] = j
                n_esc += 1
        if n_esc:
            nbits = np.empty(n_esc, np.int64)
            low = np.zeros(n_esc, np.int64)
            high = np.zeros(n_esc, np.int64)
            for k in range(n_esc):
                nbits[k], st, pos = _decode_uniform(words, pos, st, BITS_SIZE)
            for k in range(n_esc):
                bits = min(max(nbits[k] - 1, 0), CHUNK)
                if bits > 0:
                    low[k], st, pos = _decode_uniform(words, pos, st, 1 << bits)
            for k in range(n_esc):
                bits = max(nbits[k] - 1, 0) - CHUNK
                if bits > 0:
                    high[k], st, pos = _decode_uniform(words, pos, st, 1 << bits)
            for k in range(n_esc):
                raw = low[k] + (high[k] << CHUNK) + ((1 << (nbits[k] - 1)) if nbits[k] > 0 else 0)
                v = -((raw + 1) >> 1) if raw & 1 else (raw >> 1) + np.int64(top)
                values[escapes[k]] = off + v
    state[0], cursor[0] = st, pos
    fill = bounds[:-1].copy()
    for i in range(indexes.size):  # the counting sort's gather back to the step's order
        r = _U(indexes[i])
        k = _U(fill[r])
        fill[r] = k + _U(1)
        out[i] = np.int32(values[k])  # wraps a forged value; the symbols CRC rejects it
    return 0
