"""`layercast bench codec`: a trained codec at camera resolution, per thread count.

For each size and thread count, in one run: the float32 matrix-product roofline; every transform
stage in ms and achieved GFLOPS for each variant (layercast.bench.stages); the entropy coder
against CompressAI's rANS on the frame's own symbols (layercast.bench.entropy); and what a user
sees through the codec facade: base-only encode, both-layer encode, base decode (entropy path),
task path (g_s_task + task model) and enhancement decode, in ms, and again with the coding steps on
constriction's Python ANS (the same bytes) when constriction is installed."""

from __future__ import annotations

import contextlib
import statistics
import time

import torch

from layercast.bench import entropy, stages
from layercast.bench.codec import _image


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` → (height 720, width 1280)."""
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) < 1 or int(h) < 1:
        raise ValueError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 1280x720")
    return int(h), int(w)


def facade_ms(codec, image, repeat: int, reference=None) -> dict[str, list[float]]:
    """What a camera and the cloud pay per frame, through ``ScalableCodec``: per row, the median ms,
    then with ``reference`` (a module with ``Encoder``/``Decoder``, e.g. ``constriction_coder``) the
    median ms with the coding steps on it, the two timed in turn so that load falls on both alike."""
    frame = codec.encode(image)
    dec = codec.decode_base(frame.base)
    rows = {
        "encode base only": lambda: codec.encode(image, layers="base"),
        "encode both layers": lambda: codec.encode(image),
        "decode base (entropy path)": lambda: codec.decode_base(frame.base),
    }
    if codec.task_model is not None:
        rows["task path (g_s_task + task model)"] = lambda: codec.infer([dec])
    if frame.enhancement is not None:
        rows["enhancement decode"] = lambda: codec.decode_enhancement(dec, frame.enhancement)
    coders = [contextlib.nullcontext] + ([lambda: entropy.codec_coder(reference)] if reference else [])
    out = {}
    for name, fn in rows.items():
        samples: list[list[float]] = [[] for _ in coders]
        for k in range(repeat + 1):  # the first round warms up
            for j, coder in enumerate(coders):
                with coder():
                    t = time.perf_counter()
                    fn()
                    if k:
                        samples[j].append(1000 * (time.perf_counter() - t))
        out[name] = [statistics.median(s) for s in samples]
    return out


def run(
    model: str, sizes: list[str], threads: list[int], device: str, variants: list[str], repeat: int
) -> None:
    from layercast.shared.codec import load_codec

    codec = load_codec(model, device=device)
    dev = str(codec.device)
    if dev != "cpu":
        variants = [v for v in variants if v != "onnxruntime"]
    print(f"# layercast bench codec: model {model}, device {dev}, median of {repeat} runs (after a warm-up)")
    print("# absolute ms depend on the machine's load; ratios within one run are what to compare\n")
    for size in sizes:
        h, w = parse_size(size)
        image = _image(h, w)
        x = codec._pad(codec._to_tensor(image)[None])
        steps = entropy.record_steps(codec, x)
        for t in threads:
            torch.set_num_threads(t)
            roof = stages.matmul_gflops(repeat)
            print(
                f"## {w}x{h}, {t} thread{'s' if t > 1 else ''}: matmul roofline {roof:.1f} GFLOPS (float32 1024³)\n"
            )
            print(f"| stage | GFLOP | {' | '.join(variants)} |")
            print(f"|---|---:|{'---:|' * len(variants)}")
            by_stage: dict[str, dict[str, dict]] = {}
            for r in stages.measure(codec, h, w, image, variants, t, repeat):
                by_stage.setdefault(r["stage"], {})[r["variant"]] = r
            for stage, rs in by_stage.items():
                gflop = next((r["gflop"] for r in rs.values() if "gflop" in r), float("nan"))
                cells = []
                for v in variants:
                    r = rs.get(v, {})
                    cells.append(
                        f"{r['ms']:.0f} ms, {r['gflops']:.1f} GFLOPS ({100 * r['gflops'] / roof:.0f} %)"
                        if "ms" in r
                        else "fails"
                    )
                print(f"| {stage} | {gflop:.2f} | {' | '.join(cells)} |")
            errors = [
                f"{s}/{v}: {r['error']}" for s, rs in by_stage.items() for v, r in rs.items() if "error" in r
            ]
            for e in errors:
                print(f"- {e}")
            print(
                "\n| entropy coder (same symbols, same tables) | symbols | bytes | encode Msym/s | decode Msym/s |"
            )
            print("|---|---:|---:|---:|---:|")
            rows = entropy.compare(steps, repeat)
            for r in rows:
                print(
                    f"| {r['coder']} | {r['symbols']} | {r['bytes']} | {r['enc_msym_s']:.1f} | {r['dec_msym_s']:.1f} |"
                )
            ours, ref = rows[0], rows[-1]
            print(
                f"| ratio ours / CompressAI | | {ours['bytes'] / ref['bytes']:.4f} | "
                f"{ours['enc_msym_s'] / ref['enc_msym_s']:.1f}× | {ours['dec_msym_s'] / ref['dec_msym_s']:.1f}× |\n"
            )
            ref = entropy.reference_coder()
            if ref is None:
                print("| through the codec facade | ms |")
                print("|---|---:|")
            else:
                print("| through the codec facade | ms | ms, coding on constriction's Python ANS |")
                print("|---|---:|---:|")
            for k, v in facade_ms(codec, image, repeat, ref).items():
                print(f"| {k} | {' | '.join(f'{x:.0f}' for x in v)} |")
            print()
