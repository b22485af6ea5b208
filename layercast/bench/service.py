"""`layercast bench service`: the whole cloud path under load, layercast base bitstreams vs JPEG.

One process, real gRPC over loopback. For each payload (layercast base bitstreams, JPEG at
equal task accuracy), each batching setting (off: ``max_batch_size = 1``; on: ``max_batch_size``
with a few milliseconds of queue delay) and each number of cameras, it starts a fresh
:class:`~layercast.cloud.server.CloudServer` (SQLite store in a temporary folder), opens one
EdgeLink stream per camera on its own channel and one live Analytics.Subscribe client, and
measures for ``--duration`` seconds after a short warm-up:

* frames per second: results delivered to the subscriber per second;
* bytes per frame: payload bytes of the frames sent (the base bitstream, or the JPEG file);
* end-to-end latency, p50 / p99: from the frame's capture timestamp to its result arriving at
  the subscriber (frames are encoded ahead of time, as a camera's own encoder would, and stamped
  when they enter the link; the edge's encode time is measured separately and printed).

Cameras run closed-loop: each has ``--window`` frames in flight (the cloud's credits; a frame
is sent as soon as a credit comes back), so the load is as high as flow control allows.

The JPEG path is the *same* server path (EdgeLink → store → batcher → hub → subscriber) with
the codec swapped for :class:`JpegPath`: JPEG header checks, Pillow decoding and the
clean-image task model (``shared/zoo/tasks/detection.pt``) in the same batcher. Its quality is
chosen where JPEG reaches the layercast model's mAP on the synthetic test split: from
``layercast eval`` results when present (``docs/results``, ``runs/eval``, ``runs/eval-ship``),
otherwise measured on ``--calibrate-images`` images of ``--data`` in this run, otherwise a fixed
fallback (``--jpeg-quality`` overrides all three); the output says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import secrets
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from layercast.shared.codec.bitstream import LayerKind

#: Fallback JPEG quality when neither eval results nor the synthetic data set are available.
FALLBACK_JPEG_QUALITY = 50
JPEG_OPTIONS = {"optimize": True, "subsampling": 2, "progressive": False}  # as the eval baselines


# -- the JPEG path ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JpegHeader:
    width: int
    height: int
    model_id: str
    kind: LayerKind = LayerKind.BASE  # every JPEG file stands alone: an intra frame


@dataclass(frozen=True)
class JpegDecoded:
    image: np.ndarray  # uint8 HxWx3


@dataclass(frozen=True)
class JpegFrame:
    base: bytes
    enhancement: bytes | None = None


def jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality), **JPEG_OPTIONS)
    return buf.getvalue()


class JpegPath:
    """A stand-in for the codec in the cloud (``CodecLike``): JPEG files instead of base
    bitstreams, decoded with Pillow and analysed by a task model trained on clean images, run as
    the codec runs its own (``runtime``, shared/codec/runtime.py)."""

    enhancement_model_id = None

    def __init__(
        self,
        task_model: Any,
        class_names: list[str],
        quality: int,
        device: str = "cpu",
        runtime: str = "onnxruntime",
    ) -> None:
        import torch

        from layercast.shared.codec.runtime import check_runtime, exportable, place

        self.task_model = task_model.eval().to(device)
        self._run = self.task_model
        if exportable(self.task_model):
            self._run = place(self.task_model, "detector", check_runtime(runtime), torch.device(device))
        self.class_names = list(class_names)
        self.task = "detection"
        self.quality = quality
        self.device = device
        # what the cameras announce in their Hello (a 16-hex id like a model id)
        self.base_model_id = f"{0x1BE6_0000_0000_0000 + quality:016x}"

    def check_base(self, data: bytes) -> JpegHeader:
        from PIL import Image

        from layercast.shared.errors import InvalidImage

        try:
            im = Image.open(io.BytesIO(data))
            if im.format != "JPEG":
                raise InvalidImage(f"expected a JPEG file, got {im.format}")
            w, h = im.size
        except InvalidImage:
            raise
        except Exception as exc:
            raise InvalidImage(f"not a readable JPEG file: {exc}") from None
        return JpegHeader(w, h, self.base_model_id)

    def decode_base_batch(
        self, items: Sequence[Any], return_exceptions: bool = False, references: Sequence[Any] | None = None
    ) -> list[Any]:
        """JPEG files given as checked bitstreams (a header from :meth:`check_base` and the bytes);
        ``references`` is always None for them (no JPEG frame is predicted)."""
        from PIL import Image

        from layercast.shared.errors import InvalidImage

        out: list[Any] = []
        for item in items:
            data = item.data
            try:
                out.append(JpegDecoded(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))))
            except Exception as exc:
                err = InvalidImage(f"JPEG does not decode: {exc}")
                if not return_exceptions:
                    raise err from None
                out.append(err)
        return out

    def infer(self, decs: Sequence[JpegDecoded]) -> list[Any]:
        import torch

        results: list[Any] = [None] * len(decs)
        by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, d in enumerate(decs):
            by_size[d.image.shape].append(i)
        with torch.no_grad():
            for shape, idx in by_size.items():
                x = torch.from_numpy(np.stack([decs[i].image for i in idx])).to(self.device)
                x = x.permute(0, 3, 1, 2).float().div(255).contiguous()
                raw = self._run(x)
                sizes = [(shape[0], shape[1])] * len(idx)
                for i, r in zip(idx, self.task_model.postprocess(raw, sizes), strict=True):
                    results[i] = r
        return results

    def preview(self, dec: JpegDecoded) -> np.ndarray:
        return dec.image

    def reconstruct(self, dec: JpegDecoded, data: bytes) -> np.ndarray:
        from layercast.shared.errors import UnknownModel

        raise UnknownModel("the JPEG path has no enhancement layer")

    def encode_batch(self, images: Sequence[np.ndarray], layers: str = "all") -> list[JpegFrame]:
        return [JpegFrame(jpeg_bytes(im, self.quality)) for im in images]


def load_clean_task_model(path: Path) -> Any:
    """A task model checkpoint (``{"name", "kwargs", "state_dict"}``) trained on clean images."""
    import torch

    from layercast.shared.tasks import get_task_model

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = get_task_model(ckpt["name"], **ckpt["kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


# -- JPEG quality at equal accuracy -------------------------------------------------------------------


@dataclass(frozen=True)
class QualityChoice:
    quality: int
    how: str  # for people: where the number comes from
    model_map: float | None = None
    curve: tuple[tuple[int, float], ...] = ()  # (quality, mAP) of JPEG


def quality_at_accuracy(target: float, curve: Sequence[tuple[int, float]]) -> int:
    """The lowest JPEG quality whose mAP reaches ``target`` (linear between sweep points)."""
    pts = sorted(curve)
    if not pts:
        raise ValueError("empty JPEG curve")
    if pts[0][1] >= target:
        return int(pts[0][0])
    for (q0, a0), (q1, a1) in zip(pts, pts[1:], strict=False):
        if a1 >= target > a0:
            return int(math.ceil(round(q0 + (target - a0) / (a1 - a0) * (q1 - q0), 6)))
    return 95  # JPEG never reaches it in the sweep: the best quality the baselines use, and beyond


def quality_from_eval(eval_dir: Path, model_id: str, name: str) -> QualityChoice | None:
    """From ``layercast eval`` output (``rd_detection.json``), when it has this model and JPEG."""
    path = eval_dir / "rd_detection.json"
    if not path.exists():
        return None
    points = json.loads(path.read_text())
    mine = [
        p
        for p in points
        if p.get("extra", {}).get("base_model_id") == model_id or p.get("method") == name
        if p.get("method") not in ("jpeg", "webp", "avif", "uncompressed")
    ]
    curve = tuple(
        (int(p["extra"]["quality"]), float(p["accuracy"])) for p in points if p.get("method") == "jpeg"
    )
    if not mine or not curve:
        return None
    target = float(mine[0]["accuracy"])
    return QualityChoice(
        quality_at_accuracy(target, curve), f"from {path} (mAP {target:.4f})", target, tuple(sorted(curve))
    )


def quality_by_calibration(codec: Any, name: str, task_model: Any, data: Path, images: int) -> QualityChoice:
    """Measure the model's mAP and a JPEG sweep on the first ``images`` test images now."""
    from layercast.train.evaluate import evaluate_baselines, evaluate_codec

    point = evaluate_codec(codec, name, data, images)
    sweep = evaluate_baselines(task_model, "detection", data, images, codecs=["jpeg"])
    curve = tuple(sorted((int(p.extra["quality"]), float(p.accuracy)) for p in sweep))
    q = quality_at_accuracy(point.accuracy, curve)
    return QualityChoice(
        q, f"measured now on {images} test images of {data} (mAP {point.accuracy:.4f})", point.accuracy, curve
    )


# -- load generators ---------------------------------------------------------------------------------


@dataclass
class Measure:
    """What the subscriber saw (receive times are monotonic, latencies in seconds)."""

    received: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, latency)
    sent_bytes: list[int] = field(default_factory=list)
    rejected: int = 0


async def camera_stream(
    target: str,
    camera_id: str,
    token: str,
    model_id: str,
    pool: Sequence[bytes],
    stop: asyncio.Event,
    measure: Measure,
    offset: int,
) -> None:
    """One camera: Hello, then a frame whenever a credit is free, until ``stop``."""
    from grpc import aio

    from layercast.shared.clock import now_us
    from layercast.shared.rpc import edge_pb2, edge_pb2_grpc

    async with aio.insecure_channel(target) as channel:
        call = edge_pb2_grpc.EdgeLinkStub(channel).Connect()
        await call.write(
            edge_pb2.EdgeMessage(
                hello=edge_pb2.Hello(
                    camera_id=camera_id, token=token, base_model_id=model_id, next_sequence=1
                )
            )
        )
        welcome = await call.read()
        if welcome is aio.EOF or welcome.WhichOneof("kind") != "welcome":
            raise RuntimeError(f"{camera_id}: no Welcome ({await call.details()})")
        credits = welcome.welcome.initial_credits
        more = asyncio.Event()

        async def reader() -> None:
            nonlocal credits
            while (msg := await call.read()) is not aio.EOF:
                kind = msg.WhichOneof("kind")
                if kind == "credits":
                    credits += msg.credits.credits
                    more.set()
                elif kind == "rejected":
                    measure.rejected += 1

        read_task = asyncio.create_task(reader())
        stopper = asyncio.create_task(stop.wait())
        seq = 0
        try:
            while not stop.is_set():
                if credits <= 0:
                    more.clear()
                    waiter = asyncio.create_task(more.wait())
                    await asyncio.wait({waiter, stopper, read_task}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if read_task.done():
                        read_task.result()
                        return
                    continue
                seq += 1
                data = pool[(offset + seq) % len(pool)]
                frame = edge_pb2.BaseFrame(sequence=seq, capture_time_us=now_us(), base=data)
                await call.write(edge_pb2.EdgeMessage(frame=frame))
                credits -= 1
                measure.sent_bytes.append(len(data))
        finally:
            stopper.cancel()
            with contextlib.suppress(Exception):
                await call.done_writing()
            read_task.cancel()
            with contextlib.suppress(BaseException):
                await read_task
            call.cancel()


async def subscriber(target: str, measure: Measure, ready: asyncio.Event, token: str) -> None:
    """A live Analytics.Subscribe client stamping each result as it arrives."""
    from grpc import aio

    from layercast.shared.clock import now_us
    from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc

    async with aio.insecure_channel(target) as channel:
        call = analytics_pb2_grpc.AnalyticsStub(channel).Subscribe(
            analytics_pb2.SubscribeRequest(live_only=True), metadata=(("authorization", f"Bearer {token}"),)
        )
        ready.set()
        async for event in call:
            if event.WhichOneof("kind") != "result":
                raise RuntimeError("the benchmark's subscriber lagged; raise subscriber_queue")
            r = event.result
            measure.received.append((time.monotonic(), (now_us() - r.capture_time_us) / 1e6))


# -- one configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    payload: str  # "layercast" | "jpeg"
    batching: bool
    cameras: int
    workers: int = 1  # batching.workers: batches decoded and analysed at the same time
    runtime: str = "onnxruntime"  # what runs the CPU transforms (shared/codec/runtime.py)


@dataclass
class Row:
    setting: Setting
    fps: float
    bytes_per_frame: float
    p50_ms: float
    p99_ms: float
    mean_batch: float
    queue_ms: float  # mean wait in the batcher (dispatch - submit)
    compute_ms: float  # decode + inference per frame (batch wall time / batch size)
    results: int
    rejected: int


async def run_setting(
    setting: Setting,
    codec: Any,
    pool: Sequence[bytes],
    *,
    duration: float,
    warmup: float,
    window: int,
    max_batch: int,
    queue_delay_ms: float,
    workdir: Path,
) -> Row:
    from layercast.cloud.config import load_cloud_config
    from layercast.cloud.security.credentials import hash_token
    from layercast.cloud.server import CloudServer

    tokens = {f"bench-{i}": f"bench-token-{i:03d}-" + "t" * 16 for i in range(setting.cameras)}
    operator_token = secrets.token_urlsafe(24)  # the subscriber's (a viewer)
    cfg = load_cloud_config(
        overrides={
            "listen": "127.0.0.1",
            "port": 0,
            "insecure": True,  # in-process loopback: the service is measured, not TLS
            "data_dir": str(workdir),
            "device": "cpu",
            "credits_per_camera": window,
            "subscriber_queue": 1_000_000,
            "batching.max_batch_size": max_batch if setting.batching else 1,
            "batching.max_queue_delay_ms": queue_delay_ms if setting.batching else 0.0,
            "batching.workers": setting.workers,
            "runtime": setting.runtime,
            "auth.camera_tokens": [f"{c}={hash_token(t)}" for c, t in tokens.items()],
            "auth.operator_tokens": [f"bench={hash_token(operator_token)}"],
            "shutdown_grace_s": 5.0,
            # The bench measures what the server can do, not a deployment's rate limits.
            "limits.camera_frames_per_s": 0,
            "limits.operator_requests_per_s": 0,
        },
        environ={},
    )
    server = CloudServer(cfg, codec=codec)
    await server.start()
    history = server.pipeline.batcher.history  # BatchRecord per batch (warm-up excluded below)
    measure = Measure()
    stop = asyncio.Event()
    ready = asyncio.Event()
    sub = asyncio.create_task(subscriber(server.target, measure, ready, operator_token))
    await asyncio.wait_for(ready.wait(), 10)
    await asyncio.sleep(0.05)
    cams = [
        asyncio.create_task(
            camera_stream(server.target, c, t, codec.base_model_id, pool, stop, measure, offset=7 * i)
        )
        for i, (c, t) in enumerate(tokens.items())
    ]
    try:
        await asyncio.sleep(warmup)
        t0, n0, b0 = time.monotonic(), len(history), len(measure.sent_bytes)
        await asyncio.sleep(duration)
        t1, n1, b1 = time.monotonic(), len(history), len(measure.sent_bytes)
    finally:
        stop.set()
        outcomes = await asyncio.gather(*cams, return_exceptions=True)
        sub.cancel()
        with contextlib.suppress(BaseException):
            await sub
        await server.stop(5.0)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        raise RuntimeError(f"{len(failures)} camera stream(s) failed: {failures[0]!r}") from failures[0]
    window_results = [lat for (t, lat) in measure.received if t0 <= t < t1]
    lat_ms = sorted(1000 * x for x in window_results)
    batches = list(history)[n0:n1]
    frames = sum(b.size for b in batches)
    sent = measure.sent_bytes[b0:b1] or measure.sent_bytes
    return Row(
        setting,
        fps=len(window_results) / (t1 - t0),
        bytes_per_frame=statistics.fmean(sent) if sent else float("nan"),
        p50_ms=_percentile(lat_ms, 50),
        p99_ms=_percentile(lat_ms, 99),
        mean_batch=frames / len(batches) if batches else float("nan"),
        queue_ms=1000 * statistics.fmean(d for b in batches for d in b.queue_delays_s)
        if frames
        else float("nan"),
        compute_ms=1000 * sum(b.compute_s for b in batches) / frames if frames else float("nan"),
        results=len(window_results),
        rejected=measure.rejected,
    )


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


# -- the command ----------------------------------------------------------------------------------------


@dataclass
class Options:
    model: str = "default"
    cameras: tuple[int, ...] = (1, 4, 16)
    duration: float = 10.0
    warmup: float = 2.0
    window: int = 1
    max_batch: int = 8
    queue_delay_ms: float = 5.0
    jpeg_quality: int | None = None
    task_model: Path = Path("shared/zoo/tasks/detection.pt")
    #: ``layercast eval`` output folders to look in, first match wins.
    eval_dirs: tuple[Path, ...] = (Path("docs/results"), Path("runs/eval"), Path("runs/eval-ship"))
    data: Path = Path("data/synth")
    calibrate_images: int = 100
    frames: int = 32
    width: int = 256
    height: int = 192
    payloads: tuple[str, ...] = ("layercast", "jpeg")
    #: torch intra-op threads. One by default: on a shared 2-core machine two threads contend
    #: (OpenMP spin-waits) and run several times slower than one.
    threads: int = 1
    #: batching.workers of the cloud, one row each (unset: the cloud's default).
    workers: tuple[int, ...] = ()
    #: What runs the CPU transforms of both payloads' paths, one row each.
    runtimes: tuple[str, ...] = ("onnxruntime",)
    json_out: Path | None = None


def choose_quality(opts: Options, codec: Any, task_model: Any) -> QualityChoice:
    if opts.jpeg_quality is not None:
        return QualityChoice(opts.jpeg_quality, "given with --jpeg-quality")
    for eval_dir in opts.eval_dirs:
        found = quality_from_eval(eval_dir, codec.base_model_id, opts.model)
        if found is not None:
            return found
    if opts.calibrate_images > 0 and (opts.data / "coco" / "annotations").exists():
        return quality_by_calibration(codec, opts.model, task_model, opts.data, opts.calibrate_images)
    return QualityChoice(
        FALLBACK_JPEG_QUALITY,
        f"fallback: no rd_detection.json for this model in {', '.join(map(str, opts.eval_dirs))} "
        f"and no data set at {opts.data}",
    )


def _ms_per_frame(fn: Any, items: Sequence[Any], repeat: int = 1) -> float:
    fn(items[:1])  # warm-up
    t = time.perf_counter()
    for _ in range(repeat):
        for it in items:
            fn([it])
    return 1000 * (time.perf_counter() - t) / (repeat * len(items))


def run(opts: Options) -> list[Row]:
    """Run every configuration and print the table; returns the rows."""
    import torch

    from layercast.cloud.config import BatchingConfig
    from layercast.shared.codec import load_codec
    from layercast.shared.codec.runtime import configure_threads
    from layercast.shared.data.synth import render_scene

    configure_threads(opts.threads)
    workers = opts.workers or (BatchingConfig().workers,)
    codecs = {rt: load_codec(opts.model, device="cpu", runtime=rt) for rt in opts.runtimes}
    codec = codecs[opts.runtimes[0]]
    if codec.task != "detection":
        raise SystemExit(f"bench service compares detection models; {opts.model} does {codec.task}")
    clean = load_clean_task_model(opts.task_model)
    choice = choose_quality(opts, codec, clean)
    images = [render_scene(90_000 + i, opts.width, opts.height).image for i in range(opts.frames)]
    base_pool = [f.base for f in codec.encode_batch(images, layers="base")]
    jpeg_pool = [jpeg_bytes(im, choice.quality) for im in images]
    enc_ms = {
        rt: _ms_per_frame(lambda ims, c=c: c.encode_batch(ims, layers="base"), images[:8])
        for rt, c in codecs.items()
    }
    jpg_ms = _ms_per_frame(lambda ims: [jpeg_bytes(im, choice.quality) for im in ims], images[:8])

    print(
        f"layercast bench service: {opts.width}x{opts.height} synthetic frames, CPU, torch threads {torch.get_num_threads()}"
    )
    print(f"  model      {opts.model} = {codec.base_model_id} (detection)")
    print(
        f"  cloud      batching.workers {', '.join(map(str, workers))}; CPU transforms of both paths "
        f"run by {', '.join(opts.runtimes)} (shared/codec/runtime.py)"
    )
    print(f"  JPEG       quality {choice.quality}: {choice.how}")
    if choice.curve:
        print("             JPEG mAP by quality: " + ", ".join(f"q{q}={a:.4f}" for q, a in choice.curve))
    print(f"             clean-image task model {opts.task_model}")
    print(
        f"  load       closed loop, {opts.window} frame(s) in flight per camera; "
        f"{opts.warmup:g} s warm-up + {opts.duration:g} s measured per row"
    )
    print(
        f"  batching   off = max_batch_size 1, no queue delay; on = max_batch_size {opts.max_batch}, "
        f"max_queue_delay {opts.queue_delay_ms:g} ms"
    )
    encodes = ", ".join(f"{ms:.1f} ms/frame ({rt})" for rt, ms in enc_ms.items())
    print(
        f"  edge encode (not in the latency): layercast base {encodes}, JPEG {jpg_ms:.1f} ms/frame on this CPU"
    )
    print("  latency    capture timestamp (frame enters the link) -> result at a live subscriber")
    print(f"  machine    {os.cpu_count()} CPUs, load average {_load()} at start\n", flush=True)

    pools = {"layercast": base_pool, "jpeg": jpeg_pool}
    paths = {
        (p, rt): c if p == "layercast" else JpegPath(clean, codec.class_names, choice.quality, runtime=rt)
        for rt, c in codecs.items()
        for p in opts.payloads
    }
    rows: list[Row] = []
    settings = [
        Setting(p, b, n, w, rt)
        for n in opts.cameras
        for w in workers
        for rt in opts.runtimes
        for b in (False, True)
        for p in opts.payloads
    ]
    with tempfile.TemporaryDirectory(prefix="layercast-bench-") as tmp:
        for i, s in enumerate(settings):
            row = asyncio.run(
                run_setting(
                    s,
                    paths[(s.payload, s.runtime)],
                    pools[s.payload],
                    duration=opts.duration,
                    warmup=opts.warmup,
                    window=opts.window,
                    max_batch=opts.max_batch,
                    queue_delay_ms=opts.queue_delay_ms,
                    workdir=Path(tmp) / f"run-{i}",
                )
            )
            rows.append(row)
            print(
                f"  [{i + 1}/{len(settings)}] {s.payload:9s} batching {'on ' if s.batching else 'off'} "
                f"{s.cameras:2d} cameras, {s.workers} worker(s), {s.runtime}: {row.fps:6.1f} fps",
                flush=True,
            )
    if opts.json_out is not None:
        opts.json_out.write_text(json.dumps([_row_json(r) for r in rows], indent=2))
    print(f"\nload average {_load()} at the end (other work on this machine shares its CPUs)\n")
    print(format_table(rows))
    return rows


def _load() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _row_json(r: Row) -> dict[str, Any]:
    return {
        "payload": r.setting.payload,
        "batching": r.setting.batching,
        "cameras": r.setting.cameras,
        "workers": r.setting.workers,
        "runtime": r.setting.runtime,
        "fps": r.fps,
        "bytes_per_frame": r.bytes_per_frame,
        "p50_ms": r.p50_ms,
        "p99_ms": r.p99_ms,
        "mean_batch": r.mean_batch,
        "queue_ms": r.queue_ms,
        "compute_ms": r.compute_ms,
        "results": r.results,
        "rejected": r.rejected,
    }


def format_table(rows: Sequence[Row]) -> str:
    """One line per configuration. ``batch`` is the mean batch size, ``queue`` the mean wait in the
    batcher, ``compute`` decode + inference per frame. Layercast rows carry ratios against the JPEG
    row with the same cameras and batching: fps and p50 as layercast / JPEG, bytes likewise."""

    def key(s: Setting) -> tuple:
        return (s.cameras, s.workers, s.runtime, s.batching)

    jpeg = {key(r.setting): r for r in rows if r.setting.payload == "jpeg"}
    head = (
        f"{'cameras':>7} {'workers':>7} {'runtime':>11} {'batching':>8} {'payload':>9} {'fps':>6} {'bytes/frame':>11} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'batch':>5} {'queue ms':>8} {'compute ms':>10} | "
        f"{'fps vs JPEG':>11} {'bytes vs JPEG':>13} {'p50 vs JPEG':>11}"
    )
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (*key(r.setting), r.setting.payload != "layercast")):
        s = r.setting
        ref = jpeg.get(key(s))
        if s.payload != "jpeg" and ref is not None and ref.fps > 0 and r.fps > 0:
            ratios = (
                f"{r.fps / ref.fps:>10.2f}x {r.bytes_per_frame / ref.bytes_per_frame:>12.3f}x "
                f"{r.p50_ms / ref.p50_ms:>10.2f}x"
            )
        else:
            ratios = ""
        line = (
            f"{s.cameras:>7} {s.workers:>7} {s.runtime:>11} {'on' if s.batching else 'off':>8} "
            f"{s.payload:>9} {r.fps:>6.1f} "
            f"{r.bytes_per_frame:>11.0f} {r.p50_ms:>7.1f} {r.p99_ms:>7.1f} {r.mean_batch:>5.1f} "
            f"{r.queue_ms:>8.1f} {r.compute_ms:>10.1f} | {ratios}"
            + (f"  ({r.rejected} rejected)" if r.rejected else "")
        )
        lines.append(line.rstrip())
    return "\n".join(lines)
