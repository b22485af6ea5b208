"""The cloud's per-camera references: live, rebuilt from stored frames, refused when unknowable."""

from __future__ import annotations

import pytest
import torch

from layercast.cloud.ingest.references import References
from layercast.shared.codec import load_codec
from layercast.shared.codec.bitstream import LayerKind, parse_header
from layercast.shared.codec.video import VideoEncoder
from layercast.shared.data.synth import SyntheticCamera
from layercast.shared.errors import ReferenceMismatch


@pytest.fixture(scope="module")
def stream():
    """The shipped det-tiny (with its temporal model) coding 6 frames of a fixed camera: I P P P P P."""
    codec = load_codec("det-tiny", enhancement=None, device="cpu")
    assert codec.temporal is not None
    cam = SyntheticCamera(21, 128, 128)
    enc = VideoEncoder(codec, intra_period=20)
    frames = [enc.encode(cam.frame(i).image, layers="base") for i in range(6)]
    assert [f.kind for f in frames] == [LayerKind.BASE] + [LayerKind.PREDICTED] * 5
    return codec, frames


def _store(frames, keep=None):
    stored = {i + 1: f.base for i, f in enumerate(frames) if keep is None or i + 1 in keep}

    def load_chain(camera: str, sequence: int):
        chain = []
        for seq in range(sequence, 0, -1):
            if seq not in stored:
                return []
            chain.append((seq, stored[seq]))
            if parse_header(stored[seq]).kind is LayerKind.BASE:
                return chain[::-1]
        return []

    return load_chain


def test_a_restarted_cloud_rebuilds_the_reference_from_its_stored_frames(stream):
    codec, frames = stream
    refs = References(codec, _store(frames[:4]))  # frames 1..4 stored before the restart; nothing live
    header = parse_header(frames[4].base)
    ref = refs.reference_for("cam", 5, header)
    assert torch.equal(ref.y_hat, frames[3].decoded.y_hat) and refs.rebuilt == 1
    assert refs.chain_frames_decoded == 4  # the intra frame and the three P-frames after it
    dec = codec.decode_base(frames[4].base, reference=ref)
    assert torch.equal(dec.y_hat, frames[4].decoded.y_hat)
    refs.decoded("cam", 5, dec)
    assert refs.reference_for("cam", 6, parse_header(frames[5].base)) is dec  # live from now on


def test_a_reference_neither_live_nor_stored_is_refused(stream):
    codec, frames = stream
    refs = References(codec, _store(frames, keep={1, 2}))  # frame 3 never reached this cloud
    with pytest.raises(ReferenceMismatch, match="must send an intra frame"):
        refs.reference_for("cam", 4, parse_header(frames[3].base))
    assert refs.reference_for("cam", 1, parse_header(frames[0].base)) is None  # intra needs none


def test_a_stored_predicted_frame_decodes_through_its_chain_once(stream):
    codec, frames = stream
    refs = References(codec, _store(frames), cache_frames=16)
    dec = refs.decode_stored("cam", 6, frames[5].base)
    assert torch.equal(dec.y_hat, frames[5].decoded.y_hat)
    decoded = refs.chain_frames_decoded
    assert decoded == 6
    again = refs.decode_stored("cam", 6, frames[5].base)  # an Enhance after a preview: from the cache
    assert again is dec and refs.chain_frames_decoded == decoded
    refs.decode_stored("cam", 4, frames[3].base)
    assert refs.chain_frames_decoded == decoded  # frames 1..4 were decoded on the way to 6


def test_the_cache_is_bounded(stream):
    codec, frames = stream
    refs = References(codec, _store(frames), cache_frames=2)
    refs.decode_stored("cam", 6, frames[5].base)
    assert len(refs._cache) == 2
    with pytest.raises(ReferenceMismatch):
        References(codec, _store(frames, keep={2, 3})).decode_stored("cam", 3, frames[2].base)
