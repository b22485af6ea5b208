"""JPEG / WebP / AVIF baselines: real bytes, real decodes."""

from __future__ import annotations

import numpy as np
import pytest

from layercast.shared.errors import InvalidImage
from layercast.train.baselines import (
    CODECS,
    available_codecs,
    decode,
    default_qualities,
    encode,
    roundtrip,
    sweep,
)
from layercast.train.scores import PSNR


def _scene() -> np.ndarray:
    """A smooth gradient with shapes and mild noise (compresses like a natural image)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:128]
    img = np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.float64)
    img[20:60, 30:70] = [220, 40, 40]
    img[50:90, 80:120] = [40, 200, 60]
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_all_three_codecs_are_available() -> None:
    assert available_codecs() == list(CODECS)


@pytest.mark.parametrize("codec", CODECS)
def test_roundtrip_bytes_grow_and_quality_improves(codec: str) -> None:
    image = _scene()
    coded = sweep(image, codec)  # type: ignore[arg-type]
    assert [c.quality for c in coded] == list(default_qualities(codec))  # type: ignore[arg-type]
    sizes = [c.num_bytes for c in coded]
    assert all(b > a for a, b in zip(sizes, sizes[1:], strict=False)), sizes
    psnrs = []
    for c in coded:
        assert c.decoded.shape == image.shape and c.decoded.dtype == np.uint8
        assert c.bpp == pytest.approx(8 * c.num_bytes / (96 * 128))
        assert np.array_equal(decode(c.data), c.decoded)  # decoding is deterministic
        p = PSNR()
        p.update(c.decoded, image)
        psnrs.append(p.compute()["psnr"])
    assert psnrs[-1] > psnrs[0] + 3
    assert 20 < psnrs[-1] < 60


@pytest.mark.parametrize("codec", CODECS)
def test_encode_is_a_real_file_of_that_format(codec: str) -> None:
    data = encode(_scene(), codec, 50)  # type: ignore[arg-type]
    magic = {
        "jpeg": data[:3] == b"\xff\xd8\xff",
        "webp": data[8:12] == b"WEBP",
        "avif": data[4:12] == b"ftypavif",
    }
    assert magic[codec]


def test_bad_inputs() -> None:
    with pytest.raises(InvalidImage):
        encode(np.zeros((8, 8), np.uint8), "jpeg", 50)
    with pytest.raises(InvalidImage):
        encode(np.zeros((8, 8, 3), np.float32), "jpeg", 50)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown baseline codec"):
        encode(_scene(), "png", 50)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quality"):
        roundtrip(_scene(), "webp", 101)
    with pytest.raises(InvalidImage, match="cannot decode"):
        decode(b"\x00" * 64)
    truncated = encode(_scene(), "jpeg", 80)[:100]
    with pytest.raises(InvalidImage):
        decode(truncated)
