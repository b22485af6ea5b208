"""`layercast train task|base|enhancement` and `layercast eval`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder made by `layercast data synth` (or real COCO/Cityscapes)",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="run folder (state.pt, metrics.csv, model.pt); resumes if present",
    )
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (1 is fastest on a busy 2-core box)"
    )
    p.add_argument(
        "--crop", type=_size, default=None, metavar="HxW", help="random training crops, e.g. 128x128"
    )
    p.add_argument(
        "--hflip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random left-right flips of the training images, with or without --crop (default: on)",
    )


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w)


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train task models, base and enhancement layers (torchrun for DDP)")
    tsub = t.add_subparsers(dest="train_kind", metavar="KIND", required=True)

    p = tsub.add_parser("task", help="pre-train a task model on clean images")
    p.add_argument("--task", choices=["detection", "depth", "segmentation"], required=True)
    p.add_argument("--task-model", default=None)
    p.add_argument(
        "--task-init", type=Path, default=None, help="task.pt to continue training from (fresh optimizer)"
    )
    _common(p)
    p.set_defaults(func=run)

    p = tsub.add_parser("base", help="train a base layer jointly with its task model (L_b)")
    p.add_argument("--task", choices=["detection", "depth"], required=True)
    p.add_argument(
        "--beta",
        type=float,
        default=0.0,
        help="weight of the simple-synthesis reconstruction reward (0 = baseline)",
    )
    p.add_argument("--lmbda", type=float, required=True, help="weight of the task loss")
    p.add_argument("--codec", default="tiny", help="codec configuration (see `layercast models --configs`)")
    p.add_argument("--task-model", default=None)
    p.add_argument("--task-init", type=Path, default=None, help="task.pt from `layercast train task`")
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="base model.pt to continue training from (codec and task weights, fresh optimizer)",
    )
    p.add_argument(
        "--freeze-codec",
        action="store_true",
        default=None,
        help="with --init: train only its task model, on the frozen codec's rounded (decoded) output",
    )
    _common(p)
    p.set_defaults(func=run)

    p = tsub.add_parser("enhancement", help="train an enhancement layer on a frozen base (L_e)")
    p.add_argument("--base", type=Path, required=True, help="base model.pt")
    p.add_argument("--target", choices=["reconstruction", "segmentation"], default="reconstruction")
    p.add_argument(
        "--standalone", action="store_true", help="remove the base conditioning (the paper's lower bound)"
    )
    p.add_argument("--lmbda", type=float, required=True)
    p.add_argument("--codec", default="tiny")
    _common(p)
    p.set_defaults(func=run)

    p = tsub.add_parser(
        "temporal",
        help="train a base layer's P-frame (temporal) entropy model on fixed-camera clips (base frozen)",
    )
    p.add_argument("--base", required=True, help="registry name or path of the base model")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--cameras", type=int, default=48, help="training cameras per size")
    p.add_argument("--frames", type=int, default=10, help="frames per training clip")
    p.add_argument("--sizes", default="256x192,512x288", help="training clip sizes")
    p.add_argument("--batch-size", type=int, default=6)
    p.add_argument("--unroll", type=int, default=3, help="frames per window (1 intra + P-frames)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--deadzone", type=float, default=0.75, help="dead zone of coded P-frame elements")
    p.add_argument(
        "--skip-threshold",
        type=float,
        default=0.0,
        help="the skip decision while training (shared/codec/skip.py; default 0: every position coded)",
    )
    p.add_argument(
        "--distortion",
        type=float,
        default=0.0,
        help="weight of ŷ's squared error at the coded positions beside the rate (default 0: rate only)",
    )
    p.add_argument(
        "--init", help="a temporal checkpoint of the same base to start from (default: the intra model)"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_temporal)

    p = sub.add_parser("eval", help="rate-accuracy of models and JPEG/WebP/AVIF from real bytes; plots")
    p.add_argument(
        "models", nargs="+", help="registry names of base models (their enhancement is used when present)"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--data", type=Path, help="a `layercast data synth` folder: still images, vs JPEG/WebP/AVIF"
    )
    src.add_argument(
        "--clips",
        type=Path,
        help="a `layercast data clips` folder: each camera's frames as a low-delay stream "
        "(intra-only and temporal base layers) vs x264/x265/AV1 low-delay at the same intra period",
    )
    p.add_argument(
        "--intra-seconds", type=float, default=2.0, help="--clips: intra period in seconds (default 2)"
    )
    p.add_argument(
        "--video-codecs", default="x264,x265,av1", help="--clips: FFmpeg baselines (default x264,x265,av1)"
    )
    p.add_argument(
        "--deadzones",
        default="0.6",
        help="--clips: dead zones of the predicted frames' coded positions (default 0.6)",
    )
    p.add_argument(
        "--skip-thresholds",
        default="",
        help="--clips: skip thresholds of the predicted frames (0: no skip); one temporal point per "
        "skip threshold and dead zone (default: the model's own, 0.3; 0.4 for depth)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/eval"))
    p.add_argument(
        "--task-ref",
        action="append",
        default=[],
        metavar="TASK=task.pt",
        help="clean-image task model for baselines, e.g. detection=shared/zoo/tasks/detection.pt",
    )
    p.add_argument("--limit", type=int, default=None, help="first N test images only")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument(
        "--baselines",
        type=Path,
        action="append",
        default=[],
        metavar="rd_TASK.json",
        help="reuse the JPEG/WebP/AVIF curves and clean-image reference of an earlier eval on the same "
        "test images (e.g. docs/results/rd_detection.json) instead of evaluating them again",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    p.set_defaults(func=_eval)

    p = tsub.add_parser(
        "experiment", help="the paper's β × λ sweep and conditional vs standalone enhancement"
    )
    p.add_argument("task", choices=["detection", "depth"])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--task-init", type=Path, required=True, help="task.pt from `layercast train task`")
    p.add_argument("--steps", type=int, default=600, help="steps per base run")
    p.add_argument("--enh-steps", type=int, default=None, help="steps per enhancement run (default: --steps)")
    p.add_argument("--target", choices=["reconstruction", "segmentation"], default="reconstruction")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="training processes sharing the runs (one torch thread each); "
        "starting the same command in another shell does the same",
    )
    p.set_defaults(func=_experiment)

    p = sub.add_parser("report", help="evaluate an experiment's runs and write the paper's table and plots")
    p.add_argument("experiment", type=Path, help="folder made by `layercast train experiment`")
    p.add_argument("--task", choices=["detection", "depth"], required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--target", choices=["reconstruction", "segmentation"], default="reconstruction")
    p.add_argument("--limit", type=int, default=None, help="first N test images only")
    p.add_argument(
        "--enh-limit", type=int, default=None, help="test images for enhancement layers (default --limit)"
    )
    p.add_argument(
        "--baselines",
        type=Path,
        default=None,
        help="rd_<task>.json from `layercast eval` on the same test images: every base point "
        "against JPEG/WebP/AVIF at equal task accuracy",
    )
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=_report)

    p = tsub.add_parser("ship", help="regenerate the shipped model set from scratch (resumable)")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("runs/ship"))
    p.add_argument("--scale", type=float, default=1.0, help="multiply every stage's step count")
    p.add_argument(
        "--data-large",
        type=Path,
        default=None,
        help="the larger set the *-large stages train on (`layercast data synth --train 10000 --val 300`); "
        "default: --data",
    )
    p.add_argument(
        "--data-footage",
        type=Path,
        default=None,
        help="camera footage (`layercast data footage`): adds the detection stages that fine-tune the "
        "base and the clean-image reference on it, which then ship (default: no footage stages)",
    )
    p.set_defaults(func=_ship)


def _eval(args: argparse.Namespace) -> int:
    from layercast.train.evaluate import run_eval

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    refs = {}
    for item in args.task_ref:
        task, _, path = item.partition("=")
        refs[task] = Path(path)
    if args.clips is not None:
        return _eval_clips(args, refs)
    summary = run_eval(
        args.models, args.data, args.out, refs, args.limit, not args.no_baselines, stored=args.baselines
    )
    for task, info in summary["tasks"].items():
        print(f"\n[{task}]")
        for p in info["points"]:
            extra = f"  preview {p['preview_psnr']:.2f} dB" if p["preview_psnr"] is not None else ""
            if p["enhanced_psnr"] is not None:
                extra += f"  enhanced {p['enhanced_psnr']:.2f} dB at {p['total_bpp']:.4f} bpp"
            q = p["extra"].get("quality")
            name = p["method"] + (f" q={q}" if q is not None else "")
            print(f"  {name:28} {p['bpp']:8.4f} bpp  {p['accuracy_name']} {p['accuracy']:.4f}{extra}")
        for k, v in info["bytes_ratio_at_equal_accuracy"].items():
            print(
                f"  bytes ratio at equal accuracy, {k}: {'out of the baseline range' if v is None else f'{v:.2f}x'}"
            )
    print(f"\nwall time {summary['wall_time_s']} s; results in {args.out}")
    return 0


def _temporal(args: argparse.Namespace) -> int:
    from layercast.commands.data import parse_size
    from layercast.train.temporal import TemporalTrainConfig, train_temporal

    cfg = TemporalTrainConfig(
        base=args.base,
        out=args.out,
        cameras=args.cameras,
        frames=args.frames,
        sizes=tuple(parse_size(s) for s in args.sizes.split(",")),
        steps=args.steps,
        batch=args.batch_size,
        unroll=args.unroll,
        lr=args.lr,
        deadzone=args.deadzone,
        skip_threshold=args.skip_threshold,
        distortion=args.distortion,
        init=args.init,
        threads=args.threads,
        seed=args.seed,
    )
    print(train_temporal(cfg))
    return 0


def _eval_clips(args: argparse.Namespace, refs: dict[str, Path]) -> int:
    from layercast.train.video_eval import run_clip_eval

    codecs = tuple(c for c in args.video_codecs.split(",") if c)
    summary = run_clip_eval(
        args.models,
        args.clips,
        args.out,
        refs,
        intra_seconds=args.intra_seconds,
        baselines=not args.no_baselines,
        codecs=codecs,
        stored=args.baselines,
        deadzones=tuple(float(v) for v in args.deadzones.split(",") if v),
        skip_thresholds=tuple(float(v) for v in args.skip_thresholds.split(",") if v) or (None,),
    )
    print(
        f"{summary['cameras']} cameras x {summary['frames_per_clip']} frames, {summary['size']}, GOP {summary['gop']}"
    )
    for task, info in summary["tasks"].items():
        print(f"\n[{task}]")
        for p in info["points"]:
            crf = p["extra"].get("crf")
            name = p["method"] + (f" crf={crf}" if crf is not None else "")
            bpf = p["extra"].get("bytes_per_frame")
            size = f"{bpf:8.1f} B/frame" if bpf is not None else " " * 16
            print(f"  {name:28} {size}  {p['accuracy_name']} {p['accuracy']:.4f}")
        for k, v in info["baseline_bytes_over_ours_at_equal_accuracy"].items():
            text = (
                "out of the baseline's range" if v is None else f"{v:.2f}x our bytes (ours/it = {1 / v:.2f})"
            )
            print(f"  at equal accuracy, {k}: {text}")
    print(f"\nwall time {summary['wall_time_s']} s; results in {args.out}")
    return 0


def _experiment(args: argparse.Namespace) -> int:
    import multiprocessing as mp

    from layercast.train.experiments import run_experiment

    run = (args.task, args.data, args.out, args.task_init, args.steps, args.target, args.enh_steps)
    helpers = [mp.get_context("spawn").Process(target=run_experiment, args=run) for _ in range(args.jobs - 1)]
    for h in helpers:
        h.start()
    paths = run_experiment(*run)
    for h in helpers:
        h.join()
    failed = [h.exitcode for h in helpers if h.exitcode]
    for path in paths:
        print(path, "" if path.exists() else "(missing)")
    return 1 if failed or not all(p.exists() for p in paths) else 0


def _report(args: argparse.Namespace) -> int:
    import json

    import torch

    from layercast.train.report import run_report

    torch.set_num_threads(args.threads)
    summary = run_report(
        args.experiment,
        args.data,
        args.out,
        args.task,
        args.limit,
        args.target,
        args.enh_limit,
        args.baselines,
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "curves"}, indent=2))
    print((args.out / f"table_{args.task}_{args.target}.md").read_text())
    return 0


def _ship(args: argparse.Namespace) -> int:
    from layercast.train.recipes import run_ship

    log = run_ship(
        args.data, args.out, args.scale, data_large=args.data_large, data_footage=args.data_footage
    )
    print(f"shipped models regenerated in {log['wall_time_s']:.0f} s; see {args.out / 'ship.json'}")
    return 0


def run(args: argparse.Namespace) -> int:
    from layercast.train.loop import TrainConfig, train

    kw = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    kw.pop("kind", None)
    cfg = TrainConfig(kind=args.train_kind, **kw)
    path = train(cfg)
    if path:
        print(f"exported {path}")
    return 0
