"""Real bytes round-trip: decoded symbols equal the encoded ones, for both layers and odd sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layercast.shared.codec import bitstream
from layercast.shared.errors import FrameMismatch
from tests.conftest import smooth_image


@pytest.mark.parametrize("size", [(64, 64), (37, 81), (131, 97), (200, 301)])
def test_both_layers_round_trip(untrained_codec, rng, size):
    codec = untrained_codec
    img = smooth_image(rng, *size)
    frame = codec.encode(img)
    base_hdr = bitstream.parse_header(frame.base)
    enh_hdr = bitstream.parse_header(frame.enhancement)
    assert (base_hdr.height, base_hdr.width) == size
    assert base_hdr.layer == "base" and enh_hdr.layer == "enhancement"
    assert enh_hdr.frame_ref == bitstream.frame_ref_of(frame.base)
    assert base_hdr.total_bytes == len(frame.base)

    # the encoder's ŷ is exactly what the decoder reconstructs from the bytes alone
    enc = codec.base.latent_codec.compress(codec.base.g_a(codec._pad(codec._to_tensor(img)[None])))
    dec = codec.decode_base(frame.base)
    assert torch.equal(dec.y_hat, enc["y_hat"])
    # the header does not carry the latent shape: the size and the model fix it
    assert codec.latent_shape(base_hdr) == tuple(enc["y_hat"].shape[1:])
    assert len(frame.base) - base_hdr.payload_length == bitstream.BASE_HEADER_SIZE == 28
    assert len(frame.enhancement) - enh_hdr.payload_length == bitstream.ENHANCEMENT_HEADER_SIZE == 32
    assert len(torch.unique(torch.round(dec.y_hat))) > 5, (
        "symbols should be varied for this test to mean anything"
    )

    preview = codec.preview(dec)
    assert preview.shape == (*size, 3) and preview.dtype == np.uint8
    rec = codec.reconstruct(dec, frame.enhancement)
    assert rec.shape == (*size, 3)


def test_enhancement_needs_its_own_base(untrained_codec, rng):
    codec = untrained_codec
    a, b = codec.encode_batch([smooth_image(rng, 64, 64), smooth_image(rng, 64, 64)])
    dec_a = codec.decode_base(a.base)
    with pytest.raises(FrameMismatch):
        codec.reconstruct(dec_a, b.enhancement)


def test_base_only_encoding(untrained_codec, rng):
    frame = untrained_codec.encode(smooth_image(rng, 48, 40), layers="base")
    assert frame.enhancement is None
    assert untrained_codec.decode_base(frame.base).header.width == 40


def test_batch_equals_single(untrained_codec, rng):
    imgs = [smooth_image(rng, 64, 96) for _ in range(3)] + [smooth_image(rng, 50, 50)]
    batch = untrained_codec.encode_batch(imgs)
    singles = [untrained_codec.encode(im) for im in imgs]
    assert [f.base for f in batch] == [f.base for f in singles]
    assert [f.enhancement for f in batch] == [f.enhancement for f in singles]
