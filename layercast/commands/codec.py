"""`layercast encode | decode | info | models`: the codec on files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BASE_SUFFIX = ".lcb"
ENH_SUFFIX = ".lce"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="encode images into base (.lcb) and enhancement (.lce) bitstreams")
    p.add_argument("images", nargs="+", type=Path, help="PNG or JPEG files, any size")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("--model", default="default", help="registry name, model id or checkpoint path")
    p.add_argument("--layers", choices=["base", "all"], default="all")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=encode)

    p = sub.add_parser(
        "decode", help="decode bitstreams to PNG (full = base + enhancement; --preview = base only)"
    )
    p.add_argument(
        "files", nargs="+", type=Path, help=".lcb files (the .lce beside each is used for the full decode)"
    )
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--preview", action="store_true", help="simple synthesis from the base layer alone")
    p.add_argument("--model", default=None, help="defaults to the model whose id is in the bitstream")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=decode)

    p = sub.add_parser("info", help="print a bitstream's header fields, sizes and bpp")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=info)

    p = sub.add_parser("models", help="list the models in the registry")
    p.set_defaults(func=models)


def encode(args: argparse.Namespace) -> int:
    from layercast.shared.codec import load_codec
    from layercast.shared.imageio import read_image

    codec = load_codec(args.model, device=args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        image = read_image(path)
        frame = codec.encode(image, layers=args.layers)
        h, w = image.shape[:2]
        (args.out / (path.stem + BASE_SUFFIX)).write_bytes(frame.base)
        line = f"{path}: {w}x{h} base {len(frame.base)} B ({8 * len(frame.base) / (w * h):.4f} bpp)"
        if frame.enhancement is not None:
            (args.out / (path.stem + ENH_SUFFIX)).write_bytes(frame.enhancement)
            line += (
                f", enhancement {len(frame.enhancement)} B ({8 * len(frame.enhancement) / (w * h):.4f} bpp)"
            )
        print(line)
    return 0


def decode(args: argparse.Namespace) -> int:
    from layercast.shared.codec import load_codec, parse_header
    from layercast.shared.imageio import write_png

    args.out.mkdir(parents=True, exist_ok=True)
    codecs: dict[str, object] = {}
    for path in args.files:
        data = path.read_bytes()
        model = args.model or parse_header(data).model_id
        codec = codecs.get(model) or codecs.setdefault(model, load_codec(model, device=args.device))
        dec = codec.decode_base(data)
        if args.preview:
            image, kind = codec.preview(dec), "preview"
        else:
            enh = path.with_suffix(ENH_SUFFIX)
            if not enh.exists():
                print(
                    f"{path}: no enhancement layer {enh.name} beside it; use --preview for the base-only image"
                )
                return 1
            image, kind = codec.reconstruct(dec, enh.read_bytes()), "full"
        out = args.out / f"{path.stem}.{kind}.png"
        write_png(out, image)
        print(f"{path}: {kind} → {out}")
    return 0


def info(args: argparse.Namespace) -> int:
    from layercast.shared.codec import parse_header

    rows = []
    for path in args.files:
        h = parse_header(path.read_bytes())
        row = {
            "file": str(path),
            "layer": h.layer,
            "format_version": h.version,
            "model_id": h.model_id,
            "frame_ref": f"{h.frame_ref:08x}",
            "width": h.width,
            "height": h.height,
            "header_bytes": h.header_size,
            "payload_bytes": h.payload_length,
            "total_bytes": h.total_bytes,
            "bpp": round(h.bpp, 5),
        }
        rows.append(row)
        if not args.json:
            print("\n".join(f"{k:>15}: {v}" for k, v in row.items()) + "\n")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def models(args: argparse.Namespace) -> int:
    from layercast.shared.codec.registry import default_registry

    for e in default_registry().entries():
        extra = (
            f"task={e.task}"
            if e.kind == "base"
            else f"target={e.target} base={e.base_model_id}" + (" standalone" if e.standalone else "")
        )
        print(f"{e.name:32} {e.kind:12} {e.model_id}  {extra}")
    return 0
