"""Entropy coders side by side on the same symbols and the same integer CDF tables.

The steps (symbols, table indexes, tables) are recorded from a real encode of one frame, so the
alphabet sizes, escape rate and step sizes are the codec's own. Each coder runs as the codec uses
it: ours takes numpy arrays (``coder.Encoder``/``Decoder``, compiled), and so does the same layout
on constriction's Python ANS (``constriction_coder``, the same bytes); CompressAI's rANS takes
Python lists, so its figures include the ``tolist`` and the table selection it needs per step."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from unittest import mock

import numpy as np
from compressai.ans import BufferedRansEncoder, RansDecoder

from layercast.shared.codec.coder import Decoder, Encoder
from layercast.shared.codec.entropy import CdfTables

Step = tuple[np.ndarray, np.ndarray, CdfTables]


def record_steps(codec, x) -> list[Step]:
    """The coding steps of the base layer of padded image batch ``x`` (one image)."""
    steps: list[Step] = []

    class Recorder(Encoder):
        def encode(self, symbols, indexes, tables):
            steps.append((np.array(symbols, np.int32), np.array(indexes, np.int32), tables))
            super().encode(symbols, indexes, tables)

    import torch

    with ExitStack() as stack, torch.no_grad():
        for mod in ("hyperprior", "context"):
            stack.enter_context(mock.patch(f"layercast.shared.codec.latent_codecs.{mod}.Encoder", Recorder))
        codec.base.latent_codec.compress(codec.base.g_a(x[:1]))
    return steps


@contextmanager
def codec_coder(module):
    """The codec's coding steps on ``module``'s ``Encoder``/``Decoder`` (e.g. ``constriction_coder``)."""
    with ExitStack() as stack:
        for mod in ("latent_codecs.hyperprior", "latent_codecs.context", "temporal"):
            for name in ("Encoder", "Decoder"):
                stack.enter_context(mock.patch(f"layercast.shared.codec.{mod}.{name}", getattr(module, name)))
        yield


def reference_coder():
    """``constriction_coder`` (the same layout on constriction's Python ANS), None without constriction."""
    try:
        from layercast.bench import constriction_coder
    except ImportError:
        return None
    return constriction_coder


def _encode_with(encoder) -> Callable:
    def encode(steps: list[Step]) -> bytes:
        enc = encoder()
        for sym, idx, t in steps:
            enc.encode(sym, idx, t)
        return enc.flush()

    return encode


def _decode_with(decoder) -> Callable:
    def decode(steps: list[Step], data: bytes) -> list[np.ndarray]:
        dec = decoder(data)
        return [dec.decode(idx, t) for _, idx, t in steps]

    return decode


def _rans_encode(steps: list[Step]) -> bytes:
    enc = BufferedRansEncoder()
    for sym, idx, t in steps:
        enc.encode_with_indexes(sym.tolist(), *t.select(idx))
    return enc.flush()


def _rans_decode(steps: list[Step], data: bytes) -> list[np.ndarray]:
    dec = RansDecoder()
    dec.set_stream(data)
    return [np.array(dec.decode_stream(*t.select(idx)), dtype=np.int32) for _, idx, t in steps]


def coders() -> dict[str, tuple[Callable, Callable]]:
    """The rows: the codec's coder first, CompressAI's (the ratio's reference) last; the same layout on
    constriction's Python ANS between them when constriction is installed (``[bench]``, ``[dev]``)."""
    rows = {"compiled ANS (ours, numba)": (_encode_with(Encoder), _decode_with(Decoder))}
    ref = reference_coder()
    if ref is not None:
        rows["constriction ANS (Python bindings)"] = (_encode_with(ref.Encoder), _decode_with(ref.Decoder))
    rows["CompressAI rANS"] = (_rans_encode, _rans_decode)
    return rows


def _median_s(fn, repeat: int, min_sample_s: float = 0.05) -> float:
    """Median seconds of one call; each sample repeats a fast ``fn`` for at least ``min_sample_s``."""
    t = time.perf_counter()
    fn()
    calls = max(1, int(min_sample_s / max(time.perf_counter() - t, 1e-9)))
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t) / calls)
    return statistics.median(samples)


def compare(steps: list[Step], repeat: int = 5) -> list[dict]:
    """Per coder: bytes, encode and decode Msym/s; checks every coder decodes what it coded."""
    n = sum(s.size for s, _, _ in steps)
    rows = []
    for name, (enc, dec) in coders().items():
        data = enc(steps)
        out = dec(steps, data)
        if not all(np.array_equal(a, s) for a, (s, _, _) in zip(out, steps, strict=True)):
            raise AssertionError(f"{name} did not decode the symbols it coded")
        te = _median_s(lambda enc=enc: enc(steps), repeat)
        td = _median_s(lambda dec=dec, data=data: dec(steps, data), repeat)
        rows.append(
            {
                "coder": name,
                "symbols": n,
                "bytes": len(data),
                "enc_msym_s": n / te / 1e6,
                "dec_msym_s": n / td / 1e6,
            }
        )
    return rows
