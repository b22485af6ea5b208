"""`layercast bench codec`: a trained codec at camera resolution, per thread count.

For each size and thread count, in one run: the float32 matrix-product roofline; every transform
stage in ms, frames/s and achieved GFLOPS for each variant, its share of the same matrix product
timed in the same rounds as the stage (layercast.bench.stages); the entropy coder
against CompressAI's rANS on the frame's own symbols (layercast.bench.entropy); and what a user
sees through the codec facade: base-only encode, both-layer encode, base decode (entropy path),
task path (g_s_task + task model), enhancement decode and, end to end, the cloud's decode base +
task path and a frame from camera to result (base-only encode, decode, task path), in ms and
frames/s, for each runtime of the CPU transforms (``--runtimes``, shared/codec/runtime.py) and,
when constriction is installed, with the coding steps on constriction's Python ANS (the same
bytes), timed in turn round after round. Stages print frames/s beside their ms as well.

``device`` (``cpu``, ``cuda``, ``cuda:N`` or ``auto``): on CUDA one runtime (torch) and no
ONNX Runtime variant; every timed call waits for the device to finish."""

from __future__ import annotations

import contextlib
import functools
import statistics
from collections.abc import Callable, Sequence

import torch

from layercast.bench import entropy, stages
from layercast.bench.codec import _image


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` → (height 720, width 1280)."""
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) < 1 or int(h) < 1:
        raise ValueError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 1280x720")
    return int(h), int(w)


def check_device(device: str) -> None:
    """A CUDA device asked for on a machine without one is an error that says so (SystemExit)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            f"layercast bench codec: --device {device}: no CUDA device on this machine "
            "(torch.cuda.is_available() is False); run with --device cpu"
        )


def facade_calls(codec, image) -> dict[str, Callable[[], object]]:
    """What a camera and the cloud pay per frame, through ``ScalableCodec``."""
    frame = codec.encode(image)
    dec = codec.decode_base(frame.base)
    row: dict[str, Callable[[], object]] = {
        "encode base only": lambda: codec.encode(image, layers="base"),
        "encode both layers": lambda: codec.encode(image),
        "decode base (entropy path)": lambda: codec.decode_base(frame.base),
    }
    if codec.task_model is not None:
        row["task path (g_s_task + task model)"] = lambda: codec.infer([dec])
    if frame.enhancement is not None:
        row["enhancement decode"] = lambda: codec.decode_enhancement(dec, frame.enhancement)
    if codec.task_model is not None:
        row[CLOUD_END_TO_END] = lambda: codec.infer([codec.decode_base(frame.base)])
        row[CAMERA_TO_RESULT] = lambda: codec.infer(
            [codec.decode_base(codec.encode(image, layers="base").base)]
        )
    return row


#: End-to-end rows of the facade table: one frame through the cloud, and from camera to result.
CLOUD_END_TO_END = "end to end: cloud (decode base + task path)"
CAMERA_TO_RESULT = "end to end: camera to result (encode base, decode, task path)"


def facade_ms(columns: dict[str, tuple[object, Callable]], image, repeat: int) -> dict[str, dict[str, float]]:
    """Median ms of each facade call for each column: a codec (runtime) and the context it runs in
    (e.g. the coding steps on another coder), timed in turn, round after round, so load on a shared
    machine falls on all of them alike."""
    calls = {
        name: (facade_calls(codec, image), context, codec.device)
        for name, (codec, context) in columns.items()
    }
    out: dict[str, dict[str, float]] = {}
    for row in next(iter(calls.values()))[0]:
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for k in range(repeat + 1):  # the first round warms up
            for name, (fns, context, device) in calls.items():
                with context():
                    ms = stages.timed_ms(fns[row], device)
                    if k:
                        samples[name].append(ms)
        out[row] = {name: statistics.median(v) for name, v in samples.items()}
    return out


def run(
    model: str,
    sizes: list[str],
    threads: list[int],
    device: str,
    variants: list[str],
    repeat: int,
    runtimes: Sequence[str] = ("torch", "onnxruntime"),
) -> None:
    from layercast.shared.codec import load_codec

    check_device(device)
    codecs = {rt: load_codec(model, device=device, runtime=rt) for rt in dict.fromkeys(runtimes)}
    codec = next(iter(codecs.values()))
    dev = str(codec.device)
    if dev != "cpu":
        variants = [v for v in variants if v != "onnxruntime"]
        codecs = {"torch": codec}  # one path on CUDA
    print(f"# layercast bench codec: model {model}, device {dev}, median of {repeat} runs (after a warm-up)")
    print("# absolute ms depend on the machine's load; ratios within one run are what to compare\n")
    for size in sizes:
        h, w = parse_size(size)
        image = _image(h, w)
        x = codec._pad(codec._to_tensor(image)[None].to(codec.device))
        steps = entropy.record_steps(codec, x)
        for t in threads:
            torch.set_num_threads(t)
            roof = stages.matmul_gflops(repeat, device=codec.device)
            print(
                f"## {w}x{h}, {t} thread{'s' if t > 1 else ''}: matmul roofline {roof:.1f} GFLOPS (float32 1024³)\n"
            )
            print(f"| stage | GFLOP | matmul GFLOPS, same rounds | {' | '.join(variants)} |")
            print(f"|---|---:|---:|{'---:|' * len(variants)}")
            by_stage: dict[str, dict[str, dict]] = {}
            for r in stages.measure(codec, h, w, image, variants, t, repeat):
                by_stage.setdefault(r["stage"], {})[r["variant"]] = r
            for stage, rs in by_stage.items():
                gflop = next((r["gflop"] for r in rs.values() if "gflop" in r), float("nan"))
                stage_roof = next((r["roof_gflops"] for r in rs.values() if "roof_gflops" in r), float("nan"))
                cells = []
                for v in variants:
                    r = rs.get(v, {})
                    cells.append(
                        f"{r['ms']:.0f} ms, {r['fps']:.1f} fps, {r['gflops']:.1f} GFLOPS ({100 * r['gflops'] / stage_roof:.0f} %)"
                        if "ms" in r
                        else "fails"
                    )
                print(f"| {stage} | {gflop:.2f} | {stage_roof:.1f} | {' | '.join(cells)} |")
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
            columns = {name: (c, contextlib.nullcontext) for name, c in codecs.items()}
            ref = entropy.reference_coder()
            if ref is not None:
                name, c = next(iter(codecs.items()))
                columns[f"{name}, coding on constriction"] = (c, functools.partial(entropy.codec_coder, ref))
            names = list(columns)
            ratio = len(names) >= 2
            print(
                f"| through the codec facade | {' | '.join(f'{n} ms' for n in names)} |"
                + (f" {names[0]} / {names[1]} |" if ratio else "")
                + f" {' | '.join(f'{n} fps' for n in names)} |"
            )
            print(f"|---|{'---:|' * (2 * len(names) + ratio)}")
            for k, ms in facade_ms(columns, image, repeat).items():
                cells = " | ".join(f"{ms[n]:.0f}" for n in names)
                fps = " | ".join(f"{1000 / ms[n]:.2f}" for n in names)
                print(
                    f"| {k} | {cells} |"
                    + (f" {ms[names[0]] / ms[names[1]]:.2f}× |" if ratio else "")
                    + f" {fps} |"
                )
            print()
