"""The codec adapter with a real (untrained) codec: per-item errors, early size checks, result conversion."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from layercast.cloud.ingest.engine import InferenceEngine
from layercast.cloud.ingest.frame import Frame
from layercast.cloud.ingest.images import encode_image
from layercast.cloud.results.png import depth_from_proto, depth_to_proto
from layercast.cloud.results.previews import preview_png, reconstruct_png
from layercast.shared.codec import bitstream
from layercast.shared.errors import BitstreamError, ImageTooLarge, InvalidImage, UnknownModel
from tests.cloud.conftest import CLASS_NAMES


def job(engine: InferenceEngine, seq: int, base: bytes) -> Frame:
    return Frame("cam", seq, 111 * seq, 0, engine.check_base(base))


def test_batch_with_a_corrupt_item_keeps_the_others(task_codec, frames):
    engine = InferenceEngine(task_codec)
    good = [frames[0].base, frames[1].base]
    # a payload byte flipped and the CRC fixed up: passes the header check, fails in decoding
    hdr = bitstream.parse_header(frames[2].base)
    payload = bytearray(bitstream.payload(frames[2].base))
    payload[len(payload) // 2] ^= 0xFF
    forged = bitstream.pack(hdr, bytes(payload))
    jobs = [
        job(engine, 1, good[0]),
        Frame("cam", 2, 0, 0, engine.check_base(forged)),
        job(engine, 3, good[1]),
    ]
    out = engine.run_batch(jobs)
    assert isinstance(out[1], BitstreamError)
    for i in (0, 2):
        r = out[i]
        assert (
            r.camera_id == "cam"
            and r.sequence == jobs[i].sequence
            and r.capture_time_us == 111 * jobs[i].sequence
        )
        assert r.width == 64 and r.height == 64 and r.task == "detection"
        assert r.model_id == task_codec.base_model_id
        assert r.base_bytes == len(jobs[i].data)
        assert r.base_bpp == pytest.approx(8 * len(jobs[i].data) / (64 * 64))
        assert all(b.class_name == CLASS_NAMES[b.class_id] for b in r.boxes)
    # the same frames alone give the same detections (batching does not change results)
    alone = engine.run_batch([job(engine, 1, good[0])])[0]
    assert [(b.x1, b.y1, b.class_id) for b in alone.boxes] == [(b.x1, b.y1, b.class_id) for b in out[0].boxes]
    dec = task_codec.decode_base_batch([good[0]])
    offline = task_codec.infer(dec)[0]
    assert len(out[0].boxes) == offline.num_detections
    np.testing.assert_allclose(
        [[b.x1, b.y1, b.x2, b.y2] for b in out[0].boxes], offline.boxes.reshape(-1, 4), rtol=1e-6
    )


def test_header_checks_come_before_decoding(task_codec, frames):
    engine = InferenceEngine(task_codec, max_pixels=128 * 128)
    hdr = bitstream.parse_header(frames[0].base)
    huge = bitstream.pack(
        bitstream.Header(**{**hdr.__dict__, "width": 60000, "height": 60000}),
        bitstream.payload(frames[0].base),
    )
    with pytest.raises(ImageTooLarge, match="60000x60000"):
        engine.check_base(huge)
    big = bitstream.pack(
        bitstream.Header(**{**hdr.__dict__, "width": 200, "height": 200}), bitstream.payload(frames[0].base)
    )
    with pytest.raises((ImageTooLarge, BitstreamError)):
        engine.check_base(big)
    other = bitstream.pack(
        bitstream.Header(**{**hdr.__dict__, "model_id": "0123456789abcdef"}),
        bitstream.payload(frames[0].base),
    )
    with pytest.raises(UnknownModel, match="0123456789abcdef"):
        engine.check_base(other)
    with pytest.raises(BitstreamError):
        engine.check_base(frames[0].base[:-3])
    with pytest.raises(UnknownModel, match="fedcba9876543210"):
        engine.require_model("fedcba9876543210")


def test_depth_maps_round_trip_in_both_encodings():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 80.0, size=(30, 40)).astype(np.float32)
    png = depth_to_proto(depth, "png16")
    assert png.encoding == "png16" and (png.width, png.height) == (40, 30)
    assert Image.open(io.BytesIO(png.data)).mode.startswith("I")  # a 16-bit grayscale PNG
    np.testing.assert_allclose(depth_from_proto(png), depth, atol=png.scale)
    f16 = depth_to_proto(depth, "f16")
    assert len(f16.data) == 30 * 40 * 2 and f16.scale == 1.0
    np.testing.assert_allclose(depth_from_proto(f16), depth, rtol=1e-3)


def test_image_input_is_size_checked_before_decoding(task_codec):
    engine = InferenceEngine(task_codec, max_pixels=100 * 100)
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, format="PNG")
    base = encode_image(engine, buf.getvalue())
    assert engine.check_base(base).header.width == 64
    big = io.BytesIO()
    Image.new("RGB", (200, 200)).save(big, format="PNG")
    with pytest.raises(ImageTooLarge):
        encode_image(engine, big.getvalue())
    with pytest.raises(InvalidImage):
        encode_image(engine, b"not an image")


def test_previews_and_reconstructions_match_the_codec(task_codec, frames):
    engine = InferenceEngine(task_codec)
    dec = task_codec.decode_base_batch([frames[3].base])[0]
    prev = preview_png(engine, frames[3].base)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(prev.png))), task_codec.preview(dec))
    rec = reconstruct_png(engine, frames[3].base, frames[3].enhancement)
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(rec.png))), task_codec.reconstruct(dec, frames[3].enhancement)
    )
    assert (rec.width, rec.height) == (64, 64)
