"""`layercast bench codec|service|soak`: benchmarks that print figures."""

from __future__ import annotations

import argparse
from pathlib import Path

VARIANTS = ("eager", "channels_last", "subpixel", "onnxruntime", "codec", "compile")
DEFAULT_VARIANTS = ("eager", "channels_last", "subpixel", "onnxruntime", "codec")


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="benchmarks that print figures")
    bsub = b.add_subparsers(dest="bench_kind", metavar="WHAT", required=True)
    p = bsub.add_parser(
        "codec",
        help="a trained codec at camera resolution: per-stage ms and GFLOPS, entropy Msym/s, encode/decode ms",
        description=(
            "Per size and thread count, in one run: the float32 matmul roofline, each transform's ms, frames/s and GFLOPS "
            "for each variant, the entropy coder beside CompressAI's rANS on the frame's own symbols, and "
            "base-only encode / base decode / task / enhancement decode and end-to-end ms and frames/s "
            "through the codec facade. "
            "--models-table prints instead our configurations beside CompressAI models and bytes vs estimate."
        ),
    )
    p.add_argument("--model", default="det-tiny", help="registry name of the codec (default det-tiny)")
    p.add_argument("--size", nargs="+", default=["1280x720"], help="frame sizes WxH (default 1280x720)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (default 1 2)")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda[:N] or auto (default cpu); cuda on a machine without a CUDA device is an error",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(DEFAULT_VARIANTS),
        help="ways to run each transform (default: all but compile, which is slow to build)",
    )
    p.add_argument("--repeat", type=int, default=3, help="timed runs per figure (median; default 3)")
    p.add_argument(
        "--runtimes",
        nargs="+",
        choices=["torch", "onnxruntime"],
        default=["torch", "onnxruntime"],
        help="runtimes of the CPU transforms timed through the codec facade, side by side (default both)",
    )
    p.add_argument("--models-table", action="store_true", help="configurations vs CompressAI models instead")
    p.add_argument("--configs", nargs="+", default=["tiny", "small", "paper"], help="with --models-table")
    p.add_argument("--trained", default=None, help="with --models-table: a trained model to add as 'trained'")
    p.set_defaults(func=_codec)

    v = bsub.add_parser(
        "video",
        help="P-frames beside intra frames of a fixed camera: encode/decode ms and bytes, at camera resolution",
    )
    v.add_argument("--model", default="det-tiny", help="registry name of the codec (default det-tiny)")
    v.add_argument("--size", nargs="+", default=["1280x720", "256x192"], help="frame sizes WxH")
    v.add_argument("--frames", type=int, default=4, help="P-frames after the intra frame (default 4)")
    v.add_argument("--repeat", type=int, default=3, help="timed runs (median; default 3)")
    v.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    v.set_defaults(func=_video)

    pb = bsub.add_parser(
        "pframe-bytes",
        help="where a P-frame's bytes go on a clip set: header, ẑ, skip mask, ŷ, the ANS state flush",
    )
    pb.add_argument("--clips", required=True, help="a `layercast data clips` folder")
    pb.add_argument("--model", default="det-tiny", help="registry name of the codec (default det-tiny)")
    pb.add_argument("--intra-seconds", type=float, default=2.0, help="intra period in seconds (default 2)")
    pb.add_argument("--cameras", type=int, default=None, help="the first N cameras only (default all)")
    pb.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    pb.set_defaults(func=_pframe_bytes)

    s = bsub.add_parser(
        "service",
        help="cloud throughput and latency for 1/4/16 cameras, batching on/off, base bitstreams vs JPEG",
        description=(
            "Real gRPC over loopback, in one process: a cloud server, N camera streams and a live subscriber. "
            "Prints frames per second, bytes per frame and p50/p99 latency (capture -> result) for base "
            "bitstreams and for JPEG at equal task accuracy through the same server path."
        ),
    )
    s.add_argument("--model", default="default", help="registry name of the codec (default: default)")
    s.add_argument(
        "--cameras", type=int, nargs="+", default=[1, 4, 16], help="camera counts (default 1 4 16)"
    )
    s.add_argument("--duration", type=float, default=10.0, help="measured seconds per configuration")
    s.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    s.add_argument("--window", type=int, default=1, help="frames in flight per camera (the cloud's credits)")
    s.add_argument("--max-batch", type=int, default=8, help="max_batch_size with batching on")
    s.add_argument("--queue-delay-ms", type=float, default=5.0, help="max_queue_delay with batching on")
    s.add_argument(
        "--jpeg-quality",
        type=int,
        default=None,
        help="JPEG quality (default: where JPEG reaches the model's mAP, from --eval-dir or measured on --data)",
    )
    s.add_argument(
        "--eval-dir",
        type=Path,
        action="append",
        default=None,
        help="`layercast eval` output to read (repeatable; default docs/results, runs/eval, runs/eval-ship)",
    )
    s.add_argument("--data", type=Path, default=Path("data/synth"), help="synthetic data set for calibration")
    s.add_argument(
        "--calibrate-images", type=int, default=100, help="test images for the quality calibration (0 = skip)"
    )
    s.add_argument(
        "--task-model",
        type=Path,
        default=Path("shared/zoo/tasks/detection.pt"),
        help="clean-image task model of the JPEG path",
    )
    s.add_argument("--payloads", nargs="+", choices=["layercast", "jpeg"], default=["layercast", "jpeg"])
    s.add_argument("--size", default="256x192", help="frame size WxH (default 256x192)")
    s.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    s.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[],
        help="batching.workers of the cloud, a row each (default: the cloud's default)",
    )
    s.add_argument(
        "--runtimes",
        nargs="+",
        choices=["onnxruntime", "torch"],
        default=["onnxruntime"],
        help="what runs the CPU transforms of both paths, a row each (default onnxruntime)",
    )
    s.add_argument("--frames", type=int, default=32, help="distinct frames the cameras replay (default 32)")
    s.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    s.set_defaults(func=_service)
    _register_soak(bsub)


def _register_soak(bsub: argparse._SubParsersAction) -> None:
    k = bsub.add_parser(
        "soak",
        help="many cameras against one `layercast cloud` process for minutes; --ramp finds how many it holds",
        description=(
            "A real `layercast cloud` process (1 torch thread) and, in this process, cameras that replay "
            "pre-encoded base bitstreams with fresh sequence numbers through the edge's own outbox and "
            "EdgeLink, plus a live Analytics subscriber. Prints, every --report-every seconds, frames "
            "captured/sent/acked/answered, frames lost by id, p50/p99 latency (capture -> result), and RSS, "
            "open fds and CPU of the cloud and of this process (from /proc); then a summary. See docs/soak.md."
        ),
    )
    k.add_argument("--cameras", type=int, default=16, help="cameras (default 16)")
    k.add_argument("--fps", type=float, default=10.0, help="frames per second per camera (default 10)")
    k.add_argument("--minutes", type=float, default=10.0, help="length of the soak (default 10)")
    k.add_argument("--size", type=int, default=64, help="square frame side in pixels (default 64)")
    k.add_argument("--report-every", type=float, default=60.0, help="seconds between reports (default 60)")
    k.add_argument("--out", type=Path, default=None, help="write soak/ramp .csv and .json here")
    k.add_argument("--model", default="default", help="registry name of the codec (default: default)")
    k.add_argument(
        "--untrained",
        metavar="CONFIG",
        default=None,
        help="run an untrained model of this architecture (e.g. micro) with --model's task model: "
        "real bitstreams and costs of a smaller network, meaningless results",
    )
    k.add_argument("--pool", type=int, default=8, help="pre-encoded frames per camera (default 8)")
    k.add_argument(
        "--drain", type=float, default=30.0, help="seconds to wait for the backlog after capture stops"
    )
    k.add_argument(
        "--outbox-sync",
        choices=["NORMAL", "FULL"],
        default="NORMAL",
        help="SQLite synchronous of the outboxes",
    )
    k.add_argument(
        "--cloud-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="cloud setting (layercast cloud --set)",
    )
    k.add_argument(
        "--threads", type=int, default=1, help="torch threads of the cloud and this process (default 1)"
    )
    k.add_argument("--no-progress", action="store_true", help="no progress bar")
    r = k.add_argument_group("ramp")
    r.add_argument(
        "--ramp", action="store_true", help="cameras 1, 2, 4, 8, 16, 24, ... until latency or backlog fails"
    )
    r.add_argument("--step-seconds", type=float, default=20.0, help="measured seconds per step (default 20)")
    r.add_argument(
        "--step-warmup", type=float, default=5.0, help="seconds before each step is measured (default 5)"
    )
    r.add_argument("--max-cameras", type=int, default=64, help="largest count tried (default 64)")
    r.add_argument(
        "--max-latency-ms", type=float, default=1000.0, help="p99 a step must stay under (default 1000)"
    )
    r.add_argument(
        "--no-refine", action="store_true", help="do not bisect between the last held and first failed count"
    )
    k.set_defaults(func=_soak)


def _soak(args: argparse.Namespace) -> int:
    from layercast.bench.soak import SoakOptions, run

    run(
        SoakOptions(
            cameras=args.cameras,
            fps=args.fps,
            minutes=args.minutes,
            size=args.size,
            report_every=args.report_every,
            out=args.out,
            model=args.model,
            untrained=args.untrained,
            pool=args.pool,
            ramp=args.ramp,
            step_seconds=args.step_seconds,
            step_warmup=args.step_warmup,
            max_cameras=args.max_cameras,
            max_latency_ms=args.max_latency_ms,
            refine=not args.no_refine,
            drain_s=args.drain,
            outbox_sync=args.outbox_sync,
            cloud_set=tuple(args.cloud_set),
            threads=args.threads,
            progress=not args.no_progress,
        )
    )
    return 0


def _service(args: argparse.Namespace) -> int:
    from layercast.bench.service import Options, run

    w, _, h = args.size.partition("x")
    run(
        Options(
            model=args.model,
            cameras=tuple(args.cameras),
            duration=args.duration,
            warmup=args.warmup,
            window=args.window,
            max_batch=args.max_batch,
            queue_delay_ms=args.queue_delay_ms,
            jpeg_quality=args.jpeg_quality,
            task_model=args.task_model,
            eval_dirs=tuple(
                args.eval_dir or (Path("docs/results"), Path("runs/eval"), Path("runs/eval-ship"))
            ),
            data=args.data,
            calibrate_images=args.calibrate_images,
            payloads=tuple(args.payloads),
            width=int(w),
            height=int(h),
            threads=args.threads,
            workers=tuple(args.workers),
            runtimes=tuple(dict.fromkeys(args.runtimes)),
            frames=args.frames,
            json_out=args.json,
        )
    )
    return 0


def _video(args: argparse.Namespace) -> int:
    from layercast.bench.speed import parse_size
    from layercast.bench.video import run

    try:
        sizes = [parse_size(s) for s in args.size]
    except ValueError as exc:
        raise SystemExit(f"layercast bench video: {exc}") from None
    run(args.model, sizes, args.frames, args.repeat, args.threads)
    return 0


def _pframe_bytes(args: argparse.Namespace) -> int:
    from layercast.bench.pframe_bytes import run

    run(args.model, args.clips, args.intra_seconds, args.cameras, args.threads)
    return 0


def _codec(args: argparse.Namespace) -> int:
    if args.models_table:
        from layercast.bench.codec import run

        configs = list(args.configs) + (["trained"] if args.trained else [])
        run(configs, args.repeat, args.trained, args.threads[0])
        return 0
    from layercast.bench.speed import parse_size
    from layercast.bench.speed import run as run_speed

    for size in args.size:
        try:
            parse_size(size)
        except ValueError as exc:
            raise SystemExit(f"layercast bench codec: {exc}") from None
    run_speed(args.model, args.size, args.threads, args.device, args.variants, args.repeat, args.runtimes)
    return 0
