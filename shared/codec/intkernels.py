"""Compiled epilogues of the integer layers (numba): one pass from the matrix products to the next
layer's input.

A layer's chunks (:class:`~layercast.shared.codec.intnet.Linear`) leave float32 (or float64)
partial sums, each an exact integer. :func:`requant` adds them as int64 with the bias, requantises
``(acc · M + 2^(S-1)) >> S``, clamps to ``[lo, hi]`` and looks the result up in ``table`` (ELU's
values, or the identity), writing float32 integers where the next layer reads them; :func:`head`
does a parameter network's last layer (scale index by the thresholds, mean on the grid). Both are
:class:`~layercast.shared.codec.intnet.Requant` and
:class:`~layercast.shared.codec.intparams.Head` element for element, in one pass instead of one
torch operation per step. :func:`scatter` writes a coding step's decoded values, as context
inputs (``to_fixed``), into a padded channels-last image.
"""

from __future__ import annotations

import numpy as np

from layercast.shared.codec.ans import _jit


@_jit
def requant(parts, bias, mult, shift, lo, hi, table, out, acc):
    """``out[r, x, j] = table[clamp((Σ_c parts[c, r, x, j] + bias[j]) · mult[j] >> shift) - lo]``
    (rounded half up) for every ``(r, x)`` of ``out`` (R, W, C); ``parts`` is (chunks, ≥R, ≥W, C).
    The sum is held in ``acc`` (scratch of C entries, ``bias``'s dtype): int32 where the layer's
    bound ``acc_max`` allows (each chunk's partial sum is below 2^24, so it converts to int32
    exactly), else int64. The arithmetic and the lookups run in separate loops over a row's
    channels (the first vectorises; together they do not)."""
    n_chunks = parts.shape[0]
    rows, width, channels = out.shape
    half = np.int64(1) << np.int64(shift - 1) if shift > 0 else np.int64(0)
    s = np.int64(shift)
    q = np.empty(channels, np.int64)
    for r in range(rows):
        for x in range(width):
            for j in range(channels):
                acc[j] = np.int32(parts[0, r, x, j]) + bias[j]
            for c in range(1, n_chunks):
                for j in range(channels):
                    acc[j] += np.int32(parts[c, r, x, j])
            for j in range(channels):
                q[j] = min(max((np.int64(acc[j]) * mult[j] + half) >> s, lo), hi) - lo
            for j in range(channels):
                out[r, x, j] = table[q[j]]


@_jit
def head(parts, bias, thresholds, mult, shift, lo, hi, indexes, means, acc):
    """A parameter network's head on rows (chunks, B·n, 1, 2c), image by image: ``indexes`` (int32,
    (B, c, n)) the number of ``thresholds[:, j]`` (levels, c; in ``acc``'s dtype) at or below the
    accumulator, ``means`` (int64, (B, c, n)) the requantised means in grid steps
    (``Head.__call__`` without a gate); ``acc`` as in :func:`requant`."""
    n_chunks = parts.shape[0]
    width = parts.shape[3]
    b_n, c, n = indexes.shape
    levels = thresholds.shape[0]
    half = np.int64(1) << np.int64(shift - 1) if shift > 0 else np.int64(0)
    s = np.int64(shift)
    count = np.zeros(c, np.int32)
    for b in range(b_n):
        for p in range(n):
            i = b * n + p
            for j in range(width):
                acc[j] = np.int32(parts[0, i, 0, j]) + bias[j]
            for k in range(1, n_chunks):
                for j in range(width):
                    acc[j] += np.int32(parts[k, i, 0, j])
            for j in range(c):
                means[b, j, p] = min(max((np.int64(acc[c + j]) * mult[j] + half) >> s, lo), hi)
            for j in range(c):
                count[j] = 0
            for level in range(levels):  # a count over the levels vectorises across channels
                for j in range(c):
                    count[j] += thresholds[level, j] <= acc[j]
            for j in range(c):
                indexes[b, j, p] = count[j]


@_jit
def scatter(values, ii, jj, shift, a_max, pad, out, c0, y_hat):
    """A coding step's ŷ ``values`` (B, c, N; on the 2⁻⁸ grid) at positions ``(ii[n], jj[n])``:
    into ``y_hat[b, c0 + j, ii, jj]``, and as context inputs ``clamp(round(grid steps / 2^shift))``
    (``to_fixed``; a left shift for ``shift`` < 0) into the padded channels-last
    ``out[b, ii + pad, jj + pad, c0 + j]``."""
    b_n, c, n = values.shape
    half = np.int64(1) << np.int64(shift - 1) if shift > 0 else np.int64(0)
    for b in range(b_n):
        for p in range(n):
            r, x = ii[p], jj[p]
            for j in range(c):
                v = values[b, j, p]
                y_hat[b, c0 + j, r, x] = v
                g = np.int64(np.rint(v * 256.0))
                q = (g + half) >> np.int64(shift) if shift >= 0 else g << np.int64(-shift)
                out[b, r + pad, x + pad, c0 + j] = min(max(q, -a_max), a_max)


@_jit
def gated_head(parts, bias, thresholds, means_q, gate_q, sigmoid, sigmoid_bits, ref, indexes, means, acc):
    """A P-frame parameter network's gated head on rows (chunks, N, 1, 3c): ``indexes`` (int32,
    (N, c)) as in :func:`head`; ``means`` (int64, (N, c)) ``ref + round(σ · (μ − ref))`` on the
    grid, where μ is the requantised mean, σ = ``sigmoid[q − lo]`` of the requantised gate q and
    ``ref`` (int64, (N, c)) the reference's grid steps (``Head.__call__`` with a gate).
    ``means_q`` and ``gate_q`` are (mult (c,) int64, shift, lo, hi) of the two requantisations."""
    n_chunks = parts.shape[0]
    width = parts.shape[3]
    n, c = indexes.shape
    levels = thresholds.shape[0]
    m_mult, m_shift, m_lo, m_hi = means_q
    g_mult, g_shift, g_lo, g_hi = gate_q
    m_half = np.int64(1) << np.int64(m_shift - 1) if m_shift > 0 else np.int64(0)
    g_half = np.int64(1) << np.int64(g_shift - 1) if g_shift > 0 else np.int64(0)
    s_half = np.int64(1) << np.int64(sigmoid_bits - 1)
    count = np.zeros(c, np.int32)
    for i in range(n):
        for j in range(width):
            acc[j] = np.int32(parts[0, i, 0, j]) + bias[j]
        for k in range(1, n_chunks):
            for j in range(width):
                acc[j] += np.int32(parts[k, i, 0, j])
        for j in range(c):
            mu = min(max((np.int64(acc[c + j]) * m_mult[j] + m_half) >> np.int64(m_shift), m_lo), m_hi)
            q = min(max((np.int64(acc[2 * c + j]) * g_mult[j] + g_half) >> np.int64(g_shift), g_lo), g_hi)
            r = ref[i, j]
            means[i, j] = r + ((sigmoid[q - g_lo] * (mu - r) + s_half) >> np.int64(sigmoid_bits))
        for j in range(c):
            count[j] = 0
        for level in range(levels):
            for j in range(c):
                count[j] += thresholds[level, j] <= acc[j]
        for j in range(c):
            indexes[i, j] = count[j]


@_jit
def scatter_rows(values, bi, ii, jj, shift, a_max, pad, out, c0, y_hat):
    """:func:`scatter` for rows of any images: ``values`` (N, c) at ``(bi[n], ii[n], jj[n])``."""
    n, c = values.shape
    half = np.int64(1) << np.int64(shift - 1) if shift > 0 else np.int64(0)
    for p in range(n):
        b, r, x = bi[p], ii[p], jj[p]
        for j in range(c):
            v = values[p, j]
            y_hat[b, c0 + j, r, x] = v
            g = np.int64(np.rint(v * 256.0))
            q = (g + half) >> np.int64(shift) if shift >= 0 else g << np.int64(-shift)
            out[b, r + pad, x + pad, c0 + j] = min(max(q, -a_max), a_max)


@_jit
def deadzone_symbols(y, means, deadzone, out):
    """``out`` (int32, (N, c)) = ``temporal.deadzone_round(y − means, deadzone)`` element for
    element: float32 ``y`` and ``means``, ``deadzone`` a float32 (so the comparison is float32's,
    as torch's with a Python number), rounding half to even as ``torch.round``."""
    n, c = out.shape
    for i in range(n):
        for j in range(c):
            r = y[i, j] - means[i, j]
            out[i, j] = 0 if abs(r) < deadzone else np.int32(np.rint(r))
