"""`layercast bench video`: what a P-frame costs beside an intra frame, at camera resolution.

For a fixed synthetic street camera (:class:`~layercast.shared.data.synth.SyntheticCamera`) at
each size, in one run and interleaved (so a noisy machine slows both alike): the median of
``repeat`` timings of base-layer encode and base decode of an intra frame and of the P-frames
that follow it (each against its own reference), with their bytes and the share of latent
positions the P-frames code (the rest are skipped).
"""

from __future__ import annotations

import statistics
import time

import torch

from layercast.shared.codec.skip import motion_mask
from layercast.shared.data.synth import SyntheticCamera


def _ms(fn, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return 1000 * (time.perf_counter() - t0)


def bench_sizes(codec, sizes: list[tuple[int, int]], frames: int, repeat: int) -> list[dict]:
    """One row per (height, width): medians of intra and predicted encode/decode ms, bytes, coded share."""
    rows = []
    for h, w in sizes:
        cam = SyntheticCamera(4, w, h, 10.0)
        images = [cam.frame(i).image for i in range(frames + 1)]
        intra = codec.encode(images[0], layers="base")
        chain = [intra]
        for im in images[1:]:
            chain.append(codec.encode(im, layers="base", reference=chain[-1].decoded))
        times: dict[str, list[float]] = {"encode_I": [], "decode_I": [], "encode_P": [], "decode_P": []}
        for _ in range(repeat):
            times["encode_I"].append(_ms(codec.encode, images[0], layers="base"))
            times["decode_I"].append(_ms(codec.decode_base, intra.base))
            for t in range(1, len(chain)):
                ref = chain[t - 1].decoded
                times["encode_P"].append(_ms(codec.encode, images[t], layers="base", reference=ref))
                times["decode_P"].append(_ms(codec.decode_base, chain[t].base, reference=ref))
        coded = []
        with torch.no_grad():
            for t in range(1, len(chain)):
                y = codec.base.g_a(codec._pad(codec._to_tensor(images[t])[None].to(codec.device)))
                ref = chain[t - 1].decoded.y_hat
                coded.append(
                    motion_mask(y.to(ref.dtype), ref, codec.temporal.skip_threshold).float().mean().item()
                )
        rows.append(
            {
                "size": f"{w}x{h}",
                **{k: statistics.median(v) for k, v in times.items()},
                "bytes_I": len(intra.base),
                "bytes_P": statistics.mean(len(f.base) for f in chain[1:]),
                "coded_share": statistics.mean(coded),
            }
        )
    return rows


def run(model: str, sizes: list[tuple[int, int]], frames: int, repeat: int, threads: int) -> None:
    from layercast.shared.codec import load_codec

    torch.set_num_threads(threads)
    codec = load_codec(model, enhancement=None, device="cpu")
    if codec.temporal is None:
        raise SystemExit(f"layercast bench video: {model} has no temporal model")
    t = codec.temporal
    print(
        f"# {model}: intra vs P-frames of a fixed camera, {frames} P-frames, median of {repeat} runs, "
        f"{threads} thread(s), skip threshold {t.skip_threshold:g}, dead zone {t.deadzone:g}"
    )
    print(
        f"{'size':>10} {'enc I ms':>9} {'enc P ms':>9} {'dec I ms':>9} {'dec P ms':>9} "
        f"{'P/I enc':>8} {'P/I dec':>8} {'bytes I':>8} {'bytes P':>8} {'coded':>6}"
    )
    for r in bench_sizes(codec, sizes, frames, repeat):
        print(
            f"{r['size']:>10} {r['encode_I']:9.1f} {r['encode_P']:9.1f} {r['decode_I']:9.1f} {r['decode_P']:9.1f} "
            f"{r['encode_P'] / r['encode_I']:8.2f} {r['decode_P'] / r['decode_I']:8.2f} "
            f"{r['bytes_I']:8d} {r['bytes_P']:8.0f} {r['coded_share']:6.0%}"
        )
