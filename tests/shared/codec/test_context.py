"""The coding steps run the integer context networks at the positions a step codes only; these
are the values the same integer networks give on the full grid."""

from __future__ import annotations

import torch

from layercast.shared.codec.intnet import A_MAX
from layercast.shared.codec.intparams import from_grid
from layercast.shared.codec.latent_codecs.context import anchor_mask
from tests.conftest import make_untrained_codec


def test_the_spatial_context_at_non_anchors_reads_the_anchors_only_and_is_the_masked_convolutions():
    """At every non-anchor, the borders (zero padding) included: the float masked convolution's
    values to within the fixed point, and nothing at the non-anchors changes them."""
    codec = make_untrained_codec()
    lc = codec.base.latent_codec
    integer, conv = lc.integer, lc.y_codec.spatial[0]
    h, w, c = 6, 9, conv.in_channels
    anchors = anchor_mask(h, w, torch.device("cpu"))
    torch.manual_seed(1)
    y = from_grid(torch.randint(-8 * 256, 8 * 256, (2, c, h, w)))  # on the 2^-8 grid
    x = torch.where(anchors, y, 0.0)
    at = (~anchors).expand(2, h, w).nonzero(as_tuple=True)
    got = integer.spatial_at(0, x, at)
    assert got.shape == (len(at[0]), 2 * c) and got.dtype == torch.int64
    assert int(got.abs().max()) <= A_MAX
    noisy = x + torch.where(anchors, 0.0, y.flip(0))
    assert torch.equal(integer.spatial_at(0, noisy, at), got)
    with torch.no_grad():
        ref = conv(x)[at[0], :, at[1], at[2]].double()
    step = 2.0 ** -integer.spatial[0].out.bits  # the fixed point calibration chose for its output
    assert float((got.double() * step - ref).abs().max()) < 0.02 * float(ref.abs().max())


def test_the_reference_features_at_positions_are_the_full_grids():
    """Coding computes the condition network's features c(ŷ_{t-1}) only where positions are coded;
    the integers are the dense integer network's, at the borders (zero padding) too."""
    codec = make_untrained_codec()
    integer = codec.enhancement.latent_codec.integer
    torch.manual_seed(0)
    ref = from_grid(torch.randint(-20 * 256, 20 * 256, (2, 64, 5, 7)))
    ref_int = integer.cond_input(ref)
    full = integer.condition(ref_int)
    moving = torch.rand(2, 5, 7) < 0.5
    moving[0, 0, 0] = moving[1, 4, 6] = moving[1, 2, 3] = True  # corners and the middle
    at = moving.nonzero(as_tuple=True)
    assert torch.equal(integer.condition_at(ref_int, at), full[at[0], :, at[1], at[2]])
