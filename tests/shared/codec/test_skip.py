"""Skip mode of P-frames: the mask of moving positions, coded exactly; static positions copy the reference."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from layercast.shared.codec import bitstream
from layercast.shared.codec.api import ScalableCodec
from layercast.shared.codec.bitstream import LayerKind
from layercast.shared.codec.coder import Decoder, Encoder
from layercast.shared.codec.entropy import SymbolChecksum
from layercast.shared.codec.factory import temporal_checkpoint
from layercast.shared.codec.registry import default_registry
from layercast.shared.codec.skip import (
    DEFAULT_SKIP_THRESHOLD,
    decode_mask,
    encode_mask,
    motion_mask,
    prune_side,
)
from layercast.shared.codec.temporal import TemporalLayer
from layercast.shared.data.synth import SyntheticCamera
from layercast.shared.errors import BitstreamError, ConfigError, UnsupportedVersion


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (3, 5), (12, 16), (45, 80)])
def test_a_mask_round_trips_through_the_coder(shape):
    rng = np.random.default_rng(sum(shape))
    masks = [torch.zeros(shape, dtype=torch.bool), torch.ones(shape, dtype=torch.bool)]
    masks += [torch.from_numpy(rng.random(shape) < p) for p in (0.1, 0.5)]
    for mask in masks:
        enc, c_enc = Encoder(), SymbolChecksum()
        encode_mask(mask[None, None], enc, c_enc)
        c_dec = SymbolChecksum()
        got = decode_mask(shape, Decoder(enc.flush()), c_dec)
        assert torch.equal(got[0, 0], mask) and c_dec.value == c_enc.value


def test_a_mostly_static_mask_costs_a_few_bytes():
    mask = torch.zeros((45, 80), dtype=torch.bool)
    mask[10:16, 20:26] = True  # one object: 36 of 3600 positions
    enc = Encoder()
    encode_mask(mask, enc, SymbolChecksum())
    assert len(enc.flush()) <= 60  # 3600 positions in under 0.14 bits each


def test_motion_mask_marks_what_changed():
    y = torch.randn(2, 8, 6, 7)
    assert motion_mask(y, y.clone(), 0.0).all()  # threshold 0: no skip
    assert not motion_mask(y, y.clone(), 0.4).any()
    ref = y.clone()
    ref[1, :, 3, 4] += 2.0
    ref[1, :4, 0, 0] += 0.2  # a small change: under the threshold
    moving = motion_mask(y, ref, 0.4)
    expected = torch.zeros(6, 7, dtype=torch.bool)
    expected[3, 4] = True
    assert not moving[0].any() and torch.equal(moving[1, 0], expected)


def test_side_information_is_pruned_to_the_hyper_positions_over_moving_ones():
    z_sym = torch.arange(1, 2 * 3 * 2 * 3 + 1, dtype=torch.int32).reshape(2, 3, 2, 3)
    moving = torch.zeros(2, 1, 7, 10, dtype=torch.bool)  # y 7×10: ẑ 2×3 (partial edge blocks)
    moving[0, 0, 5, 9] = True  # bottom-right block (rows 4..7, columns 8..11, cut at the grid)
    moving[1, 0, 0, 4] = True  # top middle block
    pruned = prune_side(z_sym, moving)
    keep = torch.zeros(2, 1, 2, 3, dtype=torch.bool)
    keep[0, 0, 1, 2] = keep[1, 0, 0, 1] = True
    assert torch.equal(pruned, torch.where(keep, z_sym, torch.zeros_like(z_sym)))
    assert torch.equal(prune_side(z_sym, torch.ones_like(moving)), z_sym)


@pytest.fixture(scope="module")
def codec() -> ScalableCodec:
    base = default_registry().load("det-tiny")
    plain = ScalableCodec(base, None, device="cpu")
    layer = TemporalLayer.from_intra(plain.base.latent_codec, plain.config)
    return ScalableCodec(base, None, temporal_checkpoint(layer, plain.base_model_id), device="cpu")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    cam = SyntheticCamera(3, 192, 128, 10.0)
    return [cam.frame(i).image for i in (0, 1)]


def test_static_positions_copy_the_reference_and_decode_bit_exactly(codec, frames):
    ref = codec.encode(frames[0], layers="base").decoded
    y = codec.base.g_a(codec._pad(codec._to_tensor(frames[1])[None])).double()
    moving = motion_mask(y, ref.y_hat, codec.temporal.skip_threshold)
    assert 0 < moving.float().mean() < 1  # a street with traffic: some of each
    p = codec.encode(frames[1], layers="base", reference=ref)
    assert p.kind is LayerKind.PREDICTED
    static = ~moving.expand_as(y)
    assert torch.equal(p.decoded.y_hat[static], ref.y_hat[static])
    assert torch.equal(codec.decode_base(p.base, reference=ref).y_hat, p.decoded.y_hat)


def test_a_p_frame_codes_side_information_only_over_moving_positions(codec, frames, monkeypatch):
    """ẑ is coded as its median over all-static blocks: fewer bytes, and the decoder (which
    reads whatever ẑ the stream holds) still gets the encoder's ŷ exactly."""
    ref = codec.encode(frames[0], layers="base").decoded
    pruned = codec.encode(frames[1], layers="base", reference=ref)
    assert torch.equal(codec.decode_base(pruned.base, reference=ref).y_hat, pruned.decoded.y_hat)
    monkeypatch.setattr("layercast.shared.codec.temporal.prune_side", lambda z_sym, moving: z_sym)
    full = codec.encode(frames[1], layers="base", reference=ref)
    assert len(pruned.base) < len(full.base)
    static = ~motion_mask(
        codec.base.g_a(codec._pad(codec._to_tensor(frames[1])[None])).double(),
        ref.y_hat,
        codec.temporal.skip_threshold,
    ).expand_as(ref.y_hat)
    assert torch.equal(pruned.decoded.y_hat[static], full.decoded.y_hat[static])


def test_a_p_frame_encode_decides_its_mask_once(codec, frames, monkeypatch):
    """ẑ's pruning and the coding steps read one motion mask per encode (one per call, not kept
    past it: the next frame decides its own)."""
    ref = codec.encode(frames[0], layers="base").decoded
    expect = codec.encode(frames[1], layers="base", reference=ref)
    calls = []

    def counted(y, reference, threshold):
        calls.append(threshold)
        return motion_mask(y, reference, threshold)

    monkeypatch.setattr("layercast.shared.codec.temporal.motion_mask", counted)
    got = codec.encode(frames[1], layers="base", reference=ref)
    assert got.base == expect.base and len(calls) == 1
    assert codec.encode(frames[0], layers="base", reference=got.decoded).base != got.base
    assert len(calls) == 2


def test_the_anchors_models_are_built_once_per_probability():
    """The mask's anchor model of each P(moving) keeps its coder tables from frame to frame."""
    from layercast.shared.codec import skip

    tables = skip._anchor_tables(3, 96)
    assert skip._anchor_tables(3, 96) is tables and tables.quantised is skip._anchor_tables(3, 96).quantised
    assert skip._anchor_tables(4, 96) is not tables


def test_skipping_a_still_frame_costs_a_fraction_of_coding_it(codec, frames):
    ref = codec.encode(frames[0], layers="base").decoded
    sizes = {}
    for threshold in (0.0, 0.4):
        codec.temporal.skip_threshold = threshold
        try:
            sizes[threshold] = len(codec.encode(frames[0], layers="base", reference=ref).base)
        finally:
            codec.temporal.skip_threshold = DEFAULT_SKIP_THRESHOLD
    assert sizes[0.4] < 0.5 * sizes[0.0]


def test_an_altered_p_frame_never_decodes_to_another_latent(codec, frames):
    """Flipped payload bits (mask or symbols) behind a valid container CRC: an error, or (a bit the
    coder never reads) the same ŷ, never a different one."""
    ref = codec.encode(frames[0], layers="base").decoded
    p = codec.encode(frames[1], layers="base", reference=ref)
    header_size = bitstream.PREDICTED_HEADER_SIZE
    head, body = p.base[: header_size - 4], p.base[header_size:]
    refused = 0
    for offset in range(0, len(body), max(1, len(body) // 24)):
        data = bytearray(body)
        data[offset] ^= 0x10
        try:
            got = codec.decode_base(bitstream.seal(head, bytes(data)), reference=ref)
        except BitstreamError:
            refused += 1
        else:
            assert torch.equal(got.y_hat, p.decoded.y_hat)
    assert refused >= 20


@pytest.mark.parametrize("version", [3, 4])
def test_an_older_p_frame_is_refused_and_an_older_intra_frame_read(codec, frames, version):
    """Versions 3 and 4 coded a P-frame behind a 32-byte header (model id, size, payload length,
    symbols CRC32, reference): refused, "re-encode the video"; their intra frames are read."""
    i = codec.encode(frames[0], layers="base")
    p = codec.encode(frames[1], layers="base", reference=i.decoded)
    head = bytearray(i.base[: bitstream.BASE_HEADER_SIZE - 4])
    head[2] = version
    old_intra = bitstream.seal(bytes(head), bitstream.payload(i.base))
    assert torch.equal(codec.decode_base(old_intra).y_hat, i.decoded.y_hat)
    body = bitstream.payload(p.base)
    old_head = bitstream.FIELDS.pack(
        bitstream.MAGIC, version, 3, bytes.fromhex(codec.temporal_model_id), 192, 128, len(body), 0
    ) + struct.pack(">I", i.decoded.frame_ref)
    old_p = bitstream.seal(old_head, body)
    assert len(old_p) - len(body) == 32
    with pytest.raises(UnsupportedVersion, match=f"version {version} predicted layer .*re-encode the video"):
        codec.decode_base(old_p, reference=i.decoded)


def test_each_shipped_base_codes_with_its_measured_skip_threshold_unless_the_edge_sets_one():
    from layercast.edge.config import load_edge_config
    from layercast.edge.encoder import Encoder
    from layercast.shared.codec import load_codec

    assert load_codec("det-tiny", enhancement=None, device="cpu").temporal.skip_threshold == 0.3
    assert load_codec("depth-tiny", enhancement=None, device="cpu").temporal.skip_threshold == 0.4
    unset = load_edge_config(overrides={"encoder.model": "depth-tiny"}, environ={}).encoder
    assert unset.skip_threshold is None
    assert Encoder.load(unset).codec.temporal.skip_threshold == 0.4
    env = {"LAYERCAST_EDGE_ENCODER__SKIP_THRESHOLD": "0.55"}
    set_ = load_edge_config(overrides={"encoder.model": "depth-tiny"}, environ=env).encoder
    assert set_.skip_threshold == 0.55 and Encoder.load(set_).codec.temporal.skip_threshold == 0.55
    with pytest.raises(ConfigError, match="skip_threshold"):
        load_edge_config(overrides={"encoder.skip_threshold": -1}, environ={})
