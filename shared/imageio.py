"""Reading and writing images with clear errors (Pillow)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from layercast.shared.errors import ImageTooLarge, InvalidImage

DEFAULT_MAX_PIXELS = 4096 * 4096


def _open(source: str | Path | bytes, max_pixels: int) -> Image.Image:
    name = "image bytes" if isinstance(source, bytes) else str(source)
    try:
        im = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise InvalidImage(f"{name}: no such file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidImage(f"{name}: not a readable image ({exc})") from None
    w, h = im.size  # read from the header: nothing decoded yet
    if w * h > max_pixels:
        raise ImageTooLarge(f"{name}: {w}x{h} is above the limit of {max_pixels} pixels")
    return im


def read_image(source: str | Path | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An 8-bit RGB image as uint8 HxWx3. Grayscale, 16-bit and other modes are refused
    with a message naming the mode (layercast codes 8-bit RGB)."""
    im = _open(source, max_pixels)
    name = "image bytes" if isinstance(source, bytes) else str(source)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise InvalidImage(f"{name}: {im.mode} is a 16-bit or float image; layercast codes 8-bit RGB images")
    if im.mode in ("L", "1", "LA"):
        raise InvalidImage(f"{name}: grayscale image (mode {im.mode}); layercast codes 8-bit RGB images")
    if im.mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr"):
        raise InvalidImage(f"{name}: unsupported image mode {im.mode}; layercast codes 8-bit RGB images")
    try:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except OSError as exc:
        raise InvalidImage(f"{name}: image data is damaged ({exc})") from None


def write_png(path: str | Path, image: np.ndarray) -> None:
    Image.fromarray(image).save(path, format="PNG")


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()
