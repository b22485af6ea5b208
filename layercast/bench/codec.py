"""Codec speed and rate-accuracy benchmark.

Prints, side by side in one run on this machine:
* encode / decode milliseconds for our configurations and CompressAI's
  ``mbt2018_mean`` and ``Elic2022Official`` (random weights are fine for timing),
  with our time split into transforms vs entropy coding;
* actual bytes from the container vs the entropy-model estimate.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from layercast.bench.stages import median_ms
from layercast.shared.codec import bitstream

SIZES = [(256, 256), (512, 768)]


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = torch.from_numpy(rng.uniform(0, 255, size=(3, max(h // 16, 2), max(w // 16, 2)))).float()[None]
    big = torch.nn.functional.interpolate(small, size=(h, w), mode="bicubic")[0].permute(1, 2, 0).numpy()
    return np.clip(big + rng.normal(0, 6, size=(h, w, 3)), 0, 255).astype(np.uint8)


def ours(config: str, trained: str | None = None):
    """A codec of ``config``: the shipped weights if ``trained`` names one, else random (scaled) weights."""
    if trained:
        from layercast.shared.codec import load_codec

        return load_codec(trained, device="cpu")
    from layercast.shared.codec.api import ScalableCodec
    from layercast.shared.codec.factory import (
        base_checkpoint,
        build_base,
        build_enhancement,
        enhancement_checkpoint,
    )

    base = build_base(config, seed=0)
    enh = build_enhancement(config, base.config.latent_channels, seed=1)
    with torch.no_grad():
        for g in (base.g_a, enh.g_a):
            g.net[-1].weight.mul_(30)
            g.net[-1].bias.mul_(30)
    cb = base_checkpoint(base)
    return ScalableCodec(cb, enhancement_checkpoint(enh, cb.model_id), device="cpu")


def bench_ours(codec, h: int, w: int, repeat: int) -> dict[str, float]:
    img = _image(h, w)
    x = codec._pad(codec._to_tensor(img)[None])
    frame = codec.encode(img, layers="base")
    with torch.no_grad():
        y = codec.base.g_a(x)
        dec = codec.decode_base(frame.base)
        row = {
            "encode_ms": median_ms(lambda: codec.encode(img, layers="base"), repeat),
            "decode_ms": median_ms(lambda: codec.decode_base(frame.base), repeat),
            "g_a_ms": median_ms(lambda: codec.base.g_a(x), repeat),
            "entropy_enc_ms": median_ms(lambda: codec.base.latent_codec.compress(y), repeat),
            "entropy_dec_ms": median_ms(
                lambda: codec.base.latent_codec.decompress(
                    [bitstream.payload(frame.base)], codec.latent_shape(dec.header)[1:]
                ),
                repeat,
            ),
            "g_s_task_ms": median_ms(lambda: codec.base.task_image(dec.y_hat.float()), repeat),
            "preview_ms": median_ms(lambda: codec.base.preview(dec.y_hat.float()), repeat),
            "bytes": len(frame.base),
        }
    return row


def bench_compressai(name: str, h: int, w: int, repeat: int) -> dict[str, float]:
    from compressai.models import Elic2022Official, MeanScaleHyperprior

    torch.manual_seed(0)
    model = MeanScaleHyperprior(128, 192) if name == "mbt2018_mean" else Elic2022Official()
    model.eval().update(force=True)
    x = torch.from_numpy(_image(h, w)).permute(2, 0, 1).float()[None] / 255
    with torch.no_grad():
        out = model.compress(x)
        return {
            "encode_ms": median_ms(lambda: model.compress(x), repeat),
            "decode_ms": median_ms(lambda: model.decompress(out["strings"], out["shape"]), repeat),
            "bytes": sum(len(s[0]) for s in out["strings"]),
        }


def bytes_vs_estimate(codec, n: int = 8, h: int = 192, w: int = 256) -> list[dict[str, float]]:
    """Actual container bytes vs the entropy-model estimate (−log2 likelihoods) of the same ŷ."""
    rows = []
    for i in range(n):
        img = _image(h, w, seed=100 + i)
        frame = codec.encode(img, layers="base")
        x = codec._pad(codec._to_tensor(img)[None])
        with torch.no_grad():
            lc = codec.base.latent_codec.eval()
            out = lc(codec.base.g_a(x))
        est_bits = sum(-torch.log2(v).sum().item() for v in out["likelihoods"].values())
        header = bitstream.BASE_HEADER_SIZE
        rows.append(
            {
                "estimate_bytes": est_bits / 8,
                "payload_bytes": len(frame.base) - header,
                "header_bytes": header,
            }
        )
    return rows


def run(configs: list[str], repeat: int, trained: str | None, threads: int = 1) -> None:
    torch.set_num_threads(threads)
    print(f"# codec speed, median of {repeat} runs, {torch.get_num_threads()} threads, CPU")
    print(f"{'model':24} {'size':>9} {'enc ms':>8} {'dec ms':>8} {'bytes':>7}  breakdown (ours)")
    for h, w in SIZES:
        for cfg in configs:
            codec = ours(cfg, trained if cfg == "trained" else None)
            r = bench_ours(codec, h, w, repeat)
            bd = (
                f"g_a {r['g_a_ms']:.1f} | entropy enc {r['entropy_enc_ms']:.1f} dec {r['entropy_dec_ms']:.1f}"
                f" | g_s_task {r['g_s_task_ms']:.1f} | preview {r['preview_ms']:.1f}"
            )
            print(
                f"{'layercast-' + cfg:24} {w}x{h:<5} {r['encode_ms']:8.1f} {r['decode_ms']:8.1f} {r['bytes']:7d}  {bd}"
            )
        for name in ("mbt2018_mean", "Elic2022Official"):
            r = bench_compressai(name, h, w, repeat)
            print(f"{name:24} {w}x{h:<5} {r['encode_ms']:8.1f} {r['decode_ms']:8.1f} {r['bytes']:7d}")
    print("\n# decode_ms for ours = entropy decoding of ŷ (what the cloud needs before the task model);")
    print("# CompressAI's decompress includes its synthesis transform g_s, so compare with ours + g_s_task.")
    name = "trained" if trained else configs[0]
    codec = ours(name, trained)
    rows = bytes_vs_estimate(codec)
    est = sum(r["estimate_bytes"] for r in rows)
    act = sum(r["payload_bytes"] for r in rows)
    print(f"\n# actual bytes vs entropy estimate ({len(rows)} images 256x192, model {trained or configs[0]})")
    for r in rows:
        print(
            f"estimate {r['estimate_bytes']:9.1f} B   payload {r['payload_bytes']:6d} B   + header {r['header_bytes']} B"
        )
    print(
        f"total: estimate {est:.1f} B, payload {act} B, overhead {100 * (act - est) / est:+.2f} % (+ {rows[0]['header_bytes']} B header each)"
    )
    assert math.isfinite(est)
