"""``layercast data``: the synthetic street benchmark.

``layercast data synth --out DIR`` renders a train split and a val split (the benchmark's held-out
test split) and writes them in the real COCO 2017 and Cityscapes layouts, so the COCO and
Cityscapes loaders read them exactly as they read the real data sets. The default, 1000 train and
200 val images at 256x192, takes 1-2 minutes and ~110 MB here: enough scenes that a small CPU
model does not memorise them, a test split with ~1,600 boxes for mAP, and few enough images that
evaluating every codec and baseline over a quality sweep stays within minutes. 256x192 keeps
Cityscapes' focal length scaled to the width and is divisible by 64 for the codec.

``layercast data clips --out DIR`` renders clips of fixed street cameras (consecutive frames with
ground truth per frame; layout in ``layercast.shared.data.clips``): the video benchmark.

``layercast data footage --out DIR`` renders frames of many training cameras (seeds disjoint from
the clips') as a COCO / Cityscapes train split (``layercast.shared.data.footage``): the set the
``*-footage`` stages of ``layercast train ship`` fine-tune on.

``layercast data preview --out PNG`` draws a montage of scenes with boxes, depth and labels.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from layercast.shared.errors import ConfigError


def parse_size(text: str) -> tuple[int, int]:
    """``"256x192"`` -> ``(256, 192)`` (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size must look like WIDTHxHEIGHT (e.g. 256x192), not {text!r}") from None
    if not (16 <= w <= 4096 and 16 <= h <= 4096):
        raise ConfigError(f"--size {text}: width and height must be within 16..4096")
    return w, h


def _synth(args: argparse.Namespace) -> int:
    from layercast.shared.data.writers import generate

    width, height = parse_size(args.size)
    if args.train < 0 or args.val < 0:
        raise ConfigError("--train and --val must be >= 0")
    if args.workers < 1:
        raise ConfigError("--workers must be >= 1")
    summary = generate(
        args.out,
        n_train=args.train,
        n_val=args.val,
        width=width,
        height=height,
        seed=args.seed,
        workers=args.workers,
        image_format=args.image_format,
        progress=not args.no_progress,
    )
    out = Path(summary.root)
    print(f"wrote {sum(s.images for s in summary.splits)} scenes in {summary.seconds:.1f} s to {out}")
    for s in summary.splits:
        cats = ", ".join(f"{k} {v}" for k, v in sorted(s.per_category.items(), key=lambda kv: -kv[1]))
        label = "val (test)" if s.split == "val" else s.split
        print(f"  {label:10s} {s.images:6d} images, {s.annotations:6d} boxes ({cats})")
    print(
        f"  COCO 2017:  {summary.coco}  (annotations/instances_{{train,val}}2017.json, train2017/, val2017/)"
    )
    print(f"  Cityscapes: {summary.cityscapes}  (leftImg8bit/, disparity/, gtFine/, camera/)")
    print(f"  info:       {out / 'synth_info.json'}")
    if args.json:
        from layercast.shared.data.writers import summary_dict

        print(json.dumps(summary_dict(summary)))
    return 0


def _clips(args: argparse.Namespace) -> int:
    from layercast.shared.data.clips import write_clips

    width, height = parse_size(args.size)
    if args.cameras < 1 or args.frames < 1:
        raise ConfigError("--cameras and --frames must be >= 1")
    if width % 2 or height % 2:
        raise ConfigError(f"--size {args.size}: video baselines (4:2:0) need even sides")
    out = write_clips(args.out, args.cameras, args.frames, width, height, args.fps, args.seed)
    print(f"wrote {args.cameras} clips x {args.frames} frames ({width}x{height}, {args.fps:g} fps) to {out}")
    return 0


def _footage(args: argparse.Namespace) -> int:
    from layercast.shared.data.footage import write_footage

    width, height = parse_size(args.size)
    if args.cameras < 1 or args.frames < 1 or args.every < 1:
        raise ConfigError("--cameras, --frames and --every must be >= 1")
    seed0 = args.seed
    if seed0 is None:
        from layercast.train.temporal import TRAIN_SEED0

        seed0 = TRAIN_SEED0
    summary = write_footage(
        args.out,
        args.cameras,
        args.frames,
        args.every,
        width,
        height,
        args.fps,
        seed0=seed0,
        progress=not args.no_progress,
    )
    print(
        f"wrote {summary.images} frames ({args.cameras} cameras x {args.frames}, every {args.every}th, "
        f"{width}x{height}; {summary.annotations} boxes) in {summary.seconds:.1f} s to {summary.root}"
    )
    return 0


def _preview(args: argparse.Namespace) -> int:
    from layercast.shared.data.preview import save_preview
    from layercast.shared.data.synth import render_scene

    width, height = parse_size(args.size)
    if args.count < 1:
        raise ConfigError("--count must be >= 1")
    scenes = [render_scene([args.seed, 0, i], width, height) for i in range(args.count)]
    path = save_preview(args.out, scenes)
    print(f"wrote {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command group."""
    parser = subparsers.add_parser(
        "data", help="synthetic benchmark data", description="The synthetic street benchmark."
    )
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)

    synth = sub.add_parser(
        "synth",
        help="render the synthetic street benchmark in COCO and Cityscapes layouts",
        description="Render synthetic street scenes and write them as COCO 2017 and Cityscapes folders.",
    )
    synth.add_argument(
        "--out", type=Path, default=Path("data/synth"), help="output folder (default: data/synth)"
    )
    synth.add_argument("--train", type=int, default=1000, help="train images (default: 1000)")
    synth.add_argument(
        "--val", type=int, default=200, help="val images, the held-out test split (default: 200)"
    )
    synth.add_argument("--size", default="256x192", help="WIDTHxHEIGHT (default: 256x192)")
    synth.add_argument(
        "--seed", type=int, default=0, help="seed; the same seed gives the same bytes (default: 0)"
    )
    synth.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
    synth.add_argument(
        "--image-format",
        choices=("png", "jpg"),
        default="png",
        help="COCO image files: png (default, lossless) or jpg (q=95)",
    )
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
    synth.set_defaults(func=_synth)

    clips = sub.add_parser(
        "clips",
        help="render clips of fixed street cameras with per-frame ground truth (the video benchmark)",
        description="Render fixed-camera clips: frames, COCO annotations and Cityscapes disparity per frame.",
    )
    clips.add_argument(
        "--out", type=Path, default=Path("data/clips"), help="output folder (default: data/clips)"
    )
    clips.add_argument("--cameras", type=int, default=8, help="cameras, one clip each (default: 8)")
    clips.add_argument("--frames", type=int, default=60, help="frames per clip (default: 60)")
    clips.add_argument("--size", default="256x192", help="WIDTHxHEIGHT (default: 256x192)")
    clips.add_argument("--fps", type=float, default=10.0, help="frame rate (default: 10)")
    clips.add_argument("--seed", type=int, default=1, help="camera k is seeded seed + k (default: 1)")
    clips.set_defaults(func=_clips)

    footage = sub.add_parser(
        "footage",
        help="render frames of many fixed training cameras as a COCO / Cityscapes train split",
        description="Render spaced frames of fixed street cameras (training seeds) in the layout of `data synth`.",
    )
    footage.add_argument(
        "--out", type=Path, default=Path("data/footage"), help="output folder (default: data/footage)"
    )
    footage.add_argument("--cameras", type=int, default=300, help="cameras (default: 300)")
    footage.add_argument("--frames", type=int, default=8, help="frames per camera (default: 8)")
    footage.add_argument("--every", type=int, default=5, help="take every N-th frame (default: 5)")
    footage.add_argument("--size", default="256x192", help="WIDTHxHEIGHT (default: 256x192)")
    footage.add_argument("--fps", type=float, default=10.0, help="frame rate (default: 10)")
    footage.add_argument(
        "--seed",
        type=int,
        default=None,
        help="camera k is seeded seed + k (default: the training seeds, layercast.train.temporal.TRAIN_SEED0)",
    )
    footage.add_argument("--no-progress", action="store_true", help="no progress bar")
    footage.set_defaults(func=_footage)

    preview = sub.add_parser("preview", help="draw a montage of synthetic scenes with their ground truth")
    preview.add_argument("--out", type=Path, default=Path("docs/img/synth_examples.png"), help="PNG to write")
    preview.add_argument("--count", type=int, default=4, help="scenes (default: 4)")
    preview.add_argument("--size", default="256x192", help="WIDTHxHEIGHT (default: 256x192)")
    preview.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    preview.set_defaults(func=_preview)
