"""`layercast encode | decode | info | models`: the codec on files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from layercast.shared.errors import ConfigError

BASE_SUFFIX = ".lcb"
ENH_SUFFIX = ".lce"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


STDIO = Path("-")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="encode images into base (.lcb) and enhancement (.lce) bitstreams")
    p.add_argument(
        "images", nargs="+", type=Path, help="PNG or JPEG files, any size, or folders of them; - reads stdin"
    )
    p.add_argument(
        "-o", "--out", type=Path, required=True, help="output folder; - writes the base layer to stdout"
    )
    p.add_argument("--model", default="default", help="registry name, model id or checkpoint path")
    p.add_argument("--layers", choices=["base", "all"], default="all")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=encode)

    p = sub.add_parser(
        "decode", help="decode bitstreams to PNG (full = base + enhancement; --preview = base only)"
    )
    p.add_argument(
        "files",
        nargs="+",
        type=Path,
        help=".lcb files or folders of them; the .lce beside each base is its enhancement (also accepted "
        "among the files, as `out/*` gives); a predicted frame decodes against the base layer just "
        "before it (a clip's frames in name order); - reads one base layer from stdin",
    )
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder; - writes one PNG to stdout")
    p.add_argument("--preview", action="store_true", help="simple synthesis from the base layer alone")
    p.add_argument("--model", default=None, help="defaults to the model whose id is in the bitstream")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=decode)

    p = sub.add_parser("info", help="print a bitstream's header fields, sizes and bpp")
    p.add_argument(
        "files",
        nargs="+",
        type=Path,
        help=".lcb / .lce files or folders of them (a predicted frame takes its size from the base "
        "layer it names among the files before it); - reads stdin",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=info)

    p = sub.add_parser("models", help="list the models in the registry")
    p.set_defaults(func=models)


def _expand(paths: list[Path], suffixes: tuple[str, ...], what: str) -> list[Path]:
    """Files as given, folders replaced by their files of ``suffixes`` (in name order), each once."""
    out: list[Path] = []
    for path in paths:
        if path == STDIO:
            out.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise ConfigError(f"{path}: a folder with no {what} ({' / '.join(suffixes)}) in it")
            out.extend(found)
        elif not path.exists():
            raise ConfigError(f"{path}: no such file")
        else:
            out.append(path)
    return list(dict.fromkeys(out))


def _read(path: Path) -> bytes:
    if path == STDIO:
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def encode(args: argparse.Namespace) -> int:
    from layercast.shared.codec import load_codec
    from layercast.shared.imageio import read_image

    images = _expand(args.images, IMAGE_SUFFIXES, "PNG or JPEG image")
    to_stdout = args.out == STDIO
    if to_stdout and (len(images) != 1 or args.layers != "base"):
        raise ConfigError("-o - writes one base layer to stdout: give one image and --layers base")
    codec = load_codec(args.model, device=args.device)
    if not to_stdout:
        args.out.mkdir(parents=True, exist_ok=True)
    for path in images:
        image = read_image(_read(path) if path == STDIO else path)
        frame = codec.encode(image, layers=args.layers)
        h, w = image.shape[:2]
        if to_stdout:
            sys.stdout.buffer.write(frame.base)
            sys.stdout.buffer.flush()
            continue
        stem = "stdin" if path == STDIO else path.stem
        (args.out / (stem + BASE_SUFFIX)).write_bytes(frame.base)
        line = f"{path}: {w}x{h} base {len(frame.base)} B ({8 * len(frame.base) / (w * h):.4f} bpp)"
        if frame.enhancement is not None:
            (args.out / (stem + ENH_SUFFIX)).write_bytes(frame.enhancement)
            line += (
                f", enhancement {len(frame.enhancement)} B ({8 * len(frame.enhancement) / (w * h):.4f} bpp)"
            )
        print(line)
    return 0


def decode(args: argparse.Namespace) -> int:
    from layercast.shared.codec import LayerKind, load_codec
    from layercast.shared.imageio import png_bytes, write_png

    files = _expand(args.files, (BASE_SUFFIX,), "base layer")
    to_stdout = args.out == STDIO
    if to_stdout and len(files) != 1:
        raise ConfigError("-o - writes one PNG to stdout: give one base layer")
    layers = {path: _read(path) for path in files}
    headers = _bound_headers(layers)
    bases = [p for p in files if headers[p].kind.is_base]
    failed = 0
    for path in files:
        if headers[path].kind.is_base:
            continue
        base = path.with_suffix(BASE_SUFFIX)
        if base in bases:
            continue  # decoded with its base
        failed += 1
        hint = "it is beside it" if base.exists() else "it is not there"
        print(
            f"layercast decode: error: {path} is an enhancement layer; decode its base layer {base} instead "
            f"(the enhancement beside a base is used with it; {hint})",
            file=sys.stderr,
        )
    if not to_stdout and bases:
        args.out.mkdir(parents=True, exist_ok=True)
    codecs: dict[str, object] = {}
    last = None  # the base layer decoded before: a predicted frame's reference
    for path in bases:
        data, header = layers[path], headers[path]
        if not header.bound:
            print(
                f"layercast decode: error: {path} is a predicted frame of base layer {header.frame_ref:08x}, "
                "which is not among the files before it; decode it after the frames of its clip, "
                "from its intra frame on",
                file=sys.stderr,
            )
            failed += 1
            continue
        model = args.model or header.model_id
        codec = codecs.get(model) or codecs.setdefault(model, load_codec(model, device=args.device))
        reference = last if header.kind is LayerKind.PREDICTED else None
        dec = last = codec.decode_base(data, reference=reference)
        if args.preview:
            image, kind = codec.preview(dec), "preview"
        else:
            enh = path.with_suffix(ENH_SUFFIX)
            if path == STDIO or not enh.is_file():
                print(
                    f"layercast decode: error: {path}: no enhancement layer {enh.name} beside it; "
                    "use --preview for the base-only image",
                    file=sys.stderr,
                )
                failed += 1
                continue
            image, kind = codec.reconstruct(dec, _read(enh)), "full"
        if to_stdout:
            sys.stdout.buffer.write(png_bytes(image))
            sys.stdout.buffer.flush()
            continue
        out = args.out / f"{'stdin' if path == STDIO else path.stem}.{kind}.png"
        write_png(out, image)
        print(f"{path}: {kind} → {out}")
    return 1 if failed else 0


def _bound_headers(layers: dict[Path, bytes]) -> dict:
    """Each file's parsed header; a predicted frame's bound to the base layer it names when that
    is among the files before it (a clip's frames in name order), otherwise left unbound."""
    from layercast.shared.codec import LayerKind, parse_header

    headers = {}
    bases: dict[int, object] = {}  # frame reference -> bound header of a base layer seen so far
    for path, data in layers.items():
        h = parse_header(data)
        if h.kind is LayerKind.PREDICTED and h.frame_ref in bases:
            h = h.bind(bases[h.frame_ref])
        if h.kind.is_base and h.bound:
            bases[h.layer_ref] = h
        headers[path] = h
    return headers


def info(args: argparse.Namespace) -> int:
    paths = _expand(args.files, (BASE_SUFFIX, ENH_SUFFIX), "bitstream")
    rows = []
    for path, h in _bound_headers({path: _read(path) for path in paths}).items():
        # a predicted frame's size and model are its reference's: unknown (null) without it
        row = {
            "file": str(path),
            "layer": h.layer,
            "format_version": h.version,
            "model_id": h.model_id or None,
            "frame_ref": f"{h.frame_ref:08x}",
            "width": h.width or None,
            "height": h.height or None,
            "header_bytes": h.header_size,
            "payload_bytes": h.payload_length,
            "total_bytes": h.total_bytes,
            "bpp": round(h.bpp, 5) if h.bound else None,
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
