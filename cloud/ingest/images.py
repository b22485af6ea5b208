"""An image sent to Analytics.Infer (PNG or JPEG) turned into a base bitstream, its size checked
before its pixels are decoded. Blocking (torch): run on a worker thread."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from layercast.cloud.ingest.engine import InferenceEngine
from layercast.shared.errors import ImageTooLarge, InvalidImage

#: What Analytics.Infer accepts as an image.
IMAGE_FORMATS = ("PNG", "JPEG")


def encode_image(engine: InferenceEngine, data: bytes) -> bytes:
    """A PNG/JPEG file to a base bitstream; the size is checked before the pixels are decoded.

    ``Image.open`` reads only the header (the size); the pixels are decoded by ``convert`` once
    the size is known to be within ``engine.max_pixels``. Only PNG and JPEG are parsed (Pillow's
    other formats are more attack surface than the API promises), and a header above Pillow's own
    decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) is refused as too large as well."""
    limit = engine.max_pixels
    try:
        im = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        w, h = im.size
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(
            f"image header claims more than the limit of {limit} pixels (refused before decoding): {exc}"
        ) from None
    except Exception as exc:
        raise InvalidImage(f"not a readable PNG or JPEG image: {exc}") from None
    if w * h > limit:
        raise ImageTooLarge(f"image of {w}x{h} is above the limit of {limit} pixels")
    try:
        rgb = np.array(im.convert("RGB"))
    except Exception as exc:
        raise InvalidImage(f"image does not decode: {exc}") from None
    return engine.codec.encode_batch([rgb], layers="base")[0].base
