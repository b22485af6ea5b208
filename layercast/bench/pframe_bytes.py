"""`layercast bench pframe-bytes`: where a P-frame's bytes go, on a clip set.

Each camera's clip is coded as ``layercast eval --clips`` codes it (a low-delay stream with the
same intra period and the encoder's defaults); every P-frame is then coded again from the same
reference with its ANS stream metered. A part's bits (ẑ, the skip mask, ŷ) are the growth of the
coder's valid bits while that part goes in (behind a warm-up symbol, so the coder's initial state
is not charged to it); the *final state flush* is what the payload holds beyond the parts: the
coder's state written out, rounded up to whole 32-bit words. Header + parts + flush = the
P-frame's bytes (checked: the metered stream is byte for byte the one sent).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import numpy as np

from layercast.shared.codec import ans, bitstream
from layercast.shared.codec.coder import _NO_CDF, _NO_RCP, Encoder

PARTS = ("z", "mask", "y")


class MeteredEncoder(Encoder):
    """An :class:`Encoder` that knows where each part of its stream starts."""

    made: list[MeteredEncoder] = []

    def __init__(self) -> None:
        super().__init__()
        self.starts = {"z": 0}
        MeteredEncoder.made.append(self)

    def mark(self, part: str) -> None:
        self.starts[part] = len(self._steps)

    def part_bits(self) -> dict[str, int]:
        """Bits each part adds to a warmed-up coder (call before :meth:`flush`): the steps run
        through the same ANS kernel, last part first as ``flush`` codes them, behind one uniform
        16-bit symbol; a part's bits are the growth of the written words plus the state's bits."""
        bounds = sorted(self.starts.items(), key=lambda kv: kv[1]) + [("", len(self._steps))]
        start, freq = ans.uniform(0x5A5A, 1 << 16)
        warm = np.array([ans.DIRECT | freq << ans.PRECISION | start], np.uint64)
        words = np.empty(1 + sum(c.size for c, _ in self._steps), np.uint32)
        state = np.zeros(1, np.uint64)
        m = ans.ans_encode(warm, _NO_CDF, _NO_RCP, words, 0, state)

        def valid_bits() -> int:
            return 32 * m + int(state[0]).bit_length()

        bits: dict[str, int] = {}
        before = valid_bits()
        for (part, first), (_, end) in reversed(list(zip(bounds, bounds[1:], strict=False))):
            for coded, q in reversed(self._steps[first:end]):
                cdf, rcp = (q.cdf, q.rcp) if q is not None else (_NO_CDF, _NO_RCP)
                m = ans.ans_encode(coded, cdf, rcp, words, m, state)
            bits[part] = valid_bits() - before
            before = valid_bits()
        return bits


@contextmanager
def metered() -> Iterator[list[MeteredEncoder]]:
    """While open, every stream the codec codes is a MeteredEncoder (listed in the yielded list)
    whose skip mask is marked."""
    from layercast.shared.codec import temporal

    real_mask = temporal.encode_mask

    def encode_mask(moving, encoder, checksum):
        encoder.mark("mask")
        real_mask(moving, encoder, checksum)
        encoder.mark("y")

    MeteredEncoder.made = []
    with (
        mock.patch("layercast.shared.codec.latent_codecs.hyperprior.Encoder", MeteredEncoder),
        mock.patch.object(temporal, "encode_mask", encode_mask),
    ):
        yield MeteredEncoder.made


def split_pframe(codec, image, reference, expected: bytes) -> dict[str, float]:
    """Bytes of one P-frame by part: header, z, mask, y, flush (they add up to ``len(expected)``)."""
    with metered() as made:
        parts: dict[str, int] = {}
        real_flush = MeteredEncoder.flush

        def flush(self):
            parts.update(self.part_bits())
            return real_flush(self)

        with mock.patch.object(MeteredEncoder, "flush", flush):
            frame = codec.encode(image, layers="base", reference=reference)
    if frame.base != expected or len(made) != 1:
        raise RuntimeError("the metered P-frame differs from the one coded")
    payload = len(expected) - bitstream.PREDICTED_HEADER_SIZE
    out = {"header": float(bitstream.PREDICTED_HEADER_SIZE), **{p: parts.get(p, 0) / 8 for p in PARTS}}
    out["flush"] = payload - sum(out[p] for p in PARTS)
    out["total"] = float(len(expected))
    return out


def split_clips(codec, clips, gop: int, cameras: int | None = None) -> dict[str, dict[str, float]]:
    """Mean bytes per P-frame by part, per camera and over all of them ("all")."""
    from layercast.shared.codec.bitstream import LayerKind
    from layercast.shared.codec.video import VideoEncoder

    rows: dict[str, list[dict[str, float]]] = {}
    for clip in list(clips)[:cameras]:
        enc = VideoEncoder(codec, intra_period=gop)
        for image in clip.images():
            reference = enc.reference
            frame = enc.encode(image, layers="base")
            if frame.kind is LayerKind.PREDICTED:
                rows.setdefault(clip.name, []).append(split_pframe(codec, image, reference, frame.base))
    out = {name: _mean(r) for name, r in rows.items()}
    out["all"] = _mean([x for r in rows.values() for x in r])
    return out


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.fmean(r[k] for r in rows) for k in rows[0]} | {"frames": float(len(rows))}


def run(model: str, clips_root, intra_seconds: float, cameras: int | None, threads: int) -> None:
    import torch

    from layercast.shared.codec import load_codec
    from layercast.shared.codec.video import intra_period_for
    from layercast.shared.data.clips import ClipSet

    torch.set_num_threads(threads)
    codec = load_codec(model, enhancement=None, device="cpu")
    if codec.temporal is None:
        raise SystemExit(f"layercast bench pframe-bytes: {model} has no temporal model")
    clips = ClipSet(clips_root)
    gop = intra_period_for(clips.fps, intra_seconds)
    t = codec.temporal
    print(
        f"# {model}: bytes of a P-frame by part, {clips_root} ({clips.width}x{clips.height}, GOP {gop}), "
        f"skip threshold {t.skip_threshold:g}, dead zone {t.deadzone:g}"
    )
    cols = ("total", "header", "z", "mask", "y", "flush")
    print(f"{'camera':>10} {'P-frames':>8} " + " ".join(f"{c:>7}" for c in cols))
    for name, r in split_clips(codec, clips, gop, cameras).items():
        print(f"{name:>10} {int(r['frames']):8d} " + " ".join(f"{r[c]:7.1f}" for c in cols))
