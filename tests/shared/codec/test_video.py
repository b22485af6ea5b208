"""The base layer as a low-delay video: P-frames against the previous frame, never a wrong one."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from layercast.shared.codec import bitstream
from layercast.shared.codec.api import ScalableCodec
from layercast.shared.codec.bitstream import LayerKind
from layercast.shared.codec.factory import base_checkpoint, build_base, temporal_checkpoint
from layercast.shared.codec.registry import default_registry
from layercast.shared.codec.skip import DEFAULT_SKIP_THRESHOLD
from layercast.shared.codec.temporal import DEFAULT_DEADZONE, TemporalLayer
from layercast.shared.codec.video import VideoDecoder, VideoEncoder, intra_period_for
from layercast.shared.data.synth import SyntheticCamera
from layercast.shared.errors import (
    CorruptBitstream,
    DecodeMismatch,
    ReferenceMismatch,
    UnknownModel,
    UnsupportedVersion,
)


def _with_temporal(codec: ScalableCodec, layer: TemporalLayer) -> ScalableCodec:
    return ScalableCodec(
        codec.base_ckpt, codec.enh_ckpt, temporal_checkpoint(layer, codec.base_model_id), device="cpu"
    )


@pytest.fixture(scope="module")
def video_codec() -> ScalableCodec:
    """The shipped detection base with an untrained P model (it codes as the intra model does)."""
    reg = default_registry()
    base = reg.load("det-tiny")
    codec = ScalableCodec(base, None, device="cpu")
    return _with_temporal(codec, TemporalLayer.from_intra(codec.base.latent_codec, codec.config, gate=8.0))


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    cam = SyntheticCamera(11, 128, 128, 10.0)
    return [cam.frame(i).image for i in range(7)]


def test_a_camera_stream_is_intra_then_predicted_and_decodes_bit_exactly(video_codec, clip):
    enc, dec = VideoEncoder(video_codec, intra_period=4), VideoDecoder(video_codec)
    kinds = []
    for image in clip:
        frame = enc.encode(image, layers="base")
        kinds.append(frame.kind)
        d = dec.decode(frame.base)
        assert torch.equal(d.y_hat, frame.decoded.y_hat)  # the decoder holds what the encoder holds
        assert d.frame_ref == zlib.crc32(frame.base)
    intra, p = LayerKind.BASE, LayerKind.PREDICTED
    assert kinds == [intra, p, p, p, intra, p, p]
    hdr = bitstream.parse_header(frame.base)
    assert hdr.kind is p and hdr.header_size == bitstream.PREDICTED_HEADER_SIZE == 14
    assert len(frame.base) == 14 + hdr.payload_length


def test_a_predicted_frame_is_never_decoded_against_another_reference(video_codec, clip):
    enc = VideoEncoder(video_codec, intra_period=10)
    frames = [enc.encode(image, layers="base") for image in clip[:4]]
    assert [f.kind for f in frames] == [LayerKind.BASE] + [LayerKind.PREDICTED] * 3
    dec = VideoDecoder(video_codec)
    with pytest.raises(ReferenceMismatch, match="intra frame"):
        dec.decode(frames[1].base)  # nothing held (a restarted cloud)
    dec.decode(frames[0].base)
    with pytest.raises(ReferenceMismatch, match="refers to base layer"):
        dec.decode(frames[2].base)  # frame 1 was lost: frame 2's reference is not held
    assert dec.reference is None  # and the decoder waits for an intra frame
    with pytest.raises(ReferenceMismatch):
        video_codec.decode_base(frames[1].base)  # the batch API refuses it the same way
    # the encoder, asked for an intra frame, restarts the chain; the decoder follows
    enc.request_intra()
    again = enc.encode(clip[4], layers="base")
    assert again.kind is LayerKind.BASE
    dec.decode(again.base)
    dec.decode(enc.encode(clip[5], layers="base").base)


def test_predicted_frames_of_several_cameras_decode_in_one_batch(video_codec, clip):
    other = [np.ascontiguousarray(im[:, ::-1]) for im in clip]  # a second camera, same size
    a, b = VideoEncoder(video_codec, 8), VideoEncoder(video_codec, 8)
    fa = [a.encode(im, layers="base") for im in clip[:3]]
    fb = [b.encode(im, layers="base") for im in other[:3]]
    refs = [fa[1].decoded, fb[1].decoded]
    out = video_codec.decode_base_batch([fa[2].base, fb[2].base], references=refs)
    assert torch.equal(out[0].y_hat, fa[2].decoded.y_hat) and torch.equal(out[1].y_hat, fb[2].decoded.y_hat)
    swapped = video_codec.decode_base_batch(
        [fa[2].base, fb[2].base], references=refs[::-1], return_exceptions=True
    )
    assert all(isinstance(e, ReferenceMismatch) for e in swapped)


def test_a_predicted_frame_needs_a_temporal_model(video_codec, clip):
    """A P-frame names no model (the connection's Hello names the temporal model; its reference's
    intra frame the base model): a codec without a temporal model refuses it; one with other
    temporal weights decodes other symbols, which the symbols check refuses."""
    enc = VideoEncoder(video_codec, 8)
    first, second = (enc.encode(im, layers="base") for im in clip[:2])
    plain = ScalableCodec(video_codec.base_ckpt, None, device="cpu")
    with pytest.raises(UnknownModel, match="no temporal model"):
        plain.decode_base(second.base, reference=plain.decode_base(first.base))
    torch.manual_seed(3)
    other = _with_temporal(plain, TemporalLayer(plain.config))  # different weights, different id
    with pytest.raises((DecodeMismatch, CorruptBitstream)):
        other.decode_base(second.base, reference=other.decode_base(first.base))
    # the bound header carries the base model of its chain and the reference's size
    bound = video_codec.decode_base(second.base, reference=first.decoded).header
    assert (bound.model_id, bound.width, bound.height) == (video_codec.base_model_id, 128, 128)


def test_a_codec_without_a_temporal_model_codes_every_frame_intra(clip):
    base = build_base("tiny", seed=0)
    codec = ScalableCodec(base_checkpoint(base), None, device="cpu")
    enc = VideoEncoder(codec, intra_period=5)
    assert not enc.predicts
    assert {enc.encode(im, layers="base").kind for im in clip[:3]} == {LayerKind.BASE}


def test_a_predicted_frame_of_another_format_version_is_refused(video_codec, clip):
    ref = video_codec.encode(clip[0], layers="base").decoded
    p = video_codec.encode(clip[1], layers="base", reference=ref)
    head = bytearray(p.base[: bitstream.PREDICTED_HEADER_SIZE - 4])
    for version in (2, 6, 9):
        head[2] = version
        with pytest.raises(UnsupportedVersion, match=f"version {version} is not supported"):
            bitstream.parse_header(bitstream.seal(bytes(head), bitstream.payload(p.base)))


def test_an_untrained_p_model_codes_as_the_intra_model(video_codec, clip):
    """from_intra copies the intra model: with the gates open and no dead zone it codes as intra does."""
    i = video_codec.encode(clip[1], layers="base")
    ref = video_codec.encode(clip[0], layers="base").decoded
    video_codec.temporal.deadzone, video_codec.temporal.skip_threshold = 0.5, 0.0
    try:
        p = video_codec.encode(clip[1], layers="base", reference=ref)
    finally:
        video_codec.temporal.deadzone = DEFAULT_DEADZONE
        video_codec.temporal.skip_threshold = DEFAULT_SKIP_THRESHOLD
    assert p.kind is LayerKind.PREDICTED
    # plus the skip mask, every position moving: 64 positions of an 8x8 latent grid in under 12 bytes
    assert abs(len(p.base) - len(i.base)) <= 0.05 * len(i.base) + 8 + 12


def test_any_dead_zone_decodes_the_same_way_and_bounds_the_latent_error(video_codec, clip):
    """The dead zone is the encoder's choice: the decoder reads every one of them."""
    ref = video_codec.encode(clip[0], layers="base").decoded
    video_codec.temporal.skip_threshold = 0.0  # every position coded (skipped ones copy the reference)
    for dz in (0.5, 1.0, 1.5):
        video_codec.temporal.deadzone = dz
        p = video_codec.encode(clip[1], layers="base", reference=ref)
        video_codec.temporal.deadzone = DEFAULT_DEADZONE
        assert torch.equal(video_codec.decode_base(p.base, reference=ref).y_hat, p.decoded.y_hat)
        y = video_codec.base.g_a(video_codec._pad(video_codec._to_tensor(clip[1])[None])).double()
        err = (p.decoded.y_hat - y).abs()
        assert err.max() <= dz + 1e-6  # ŷ stays within the dead zone of y
        assert (err > 0.5 + 1e-6).any() == (dz > 0.5)  # and only a dead zone lets it leave ±0.5
    video_codec.temporal.skip_threshold = DEFAULT_SKIP_THRESHOLD
    with pytest.raises(ValueError):
        video_codec.temporal.deadzone = 0.2


def test_intra_period_follows_the_camera_rate():
    assert intra_period_for(10.0) == 20 and intra_period_for(25.0) == 50 and intra_period_for(0.2) == 1


@pytest.mark.parametrize("name", ["det-tiny", "depth-tiny"])
def test_the_shipped_bases_code_a_fixed_camera_cheaper_as_video(name):
    """Each shipped base comes with its temporal model, and a fixed camera's P-frames cost less than
    its intra frames (real bytes, the model's own dead zone)."""
    from layercast.shared.codec import load_codec

    codec = load_codec(name, enhancement=None, device="cpu")
    assert codec.temporal is not None and codec.model_ids["temporal"]
    cam = SyntheticCamera(5, 256, 192, 10.0)
    enc = VideoEncoder(codec, intra_period=20)
    frames = [enc.encode(cam.frame(i).image, layers="base") for i in range(6)]
    intra, predicted = len(frames[0].base), [len(f.base) for f in frames[1:]]
    assert all(f.kind is LayerKind.PREDICTED for f in frames[1:])
    assert sum(predicted) / len(predicted) < 0.8 * intra
