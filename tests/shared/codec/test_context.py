"""The coding steps run the context model's networks at the positions a step codes only; these
are the values the full-grid networks (what training sees) give there."""

from __future__ import annotations

import torch
from compressai.layers import CheckerboardMaskedConv2d

from layercast.shared.codec.latent_codecs.context import (
    _pointwise,
    anchor_mask,
    masked_conv_at,
    pointwise_rows,
)


def test_the_parameter_network_on_rows_is_the_full_grids():
    torch.manual_seed(0)
    net = _pointwise(20, 8).double()
    x = torch.randn(2, 20, 5, 7, dtype=torch.float64)
    at = (torch.rand(2, 5, 7) < 0.5).nonzero(as_tuple=True)
    got = pointwise_rows(net, x[at[0], :, at[1], at[2]])
    assert torch.allclose(got, net(x)[at[0], :, at[1], at[2]], rtol=0, atol=1e-12)


def test_the_spatial_context_at_non_anchors_is_the_masked_convolutions():
    """At every non-anchor, the borders (zero padding) included, from the anchors only."""
    torch.manual_seed(1)
    conv = CheckerboardMaskedConv2d(6, 12, 5, padding=2).double()
    h, w = 6, 9
    anchors = anchor_mask(h, w, torch.device("cpu"))
    x = torch.where(anchors, torch.randn(2, 6, h, w, dtype=torch.float64), 0.0)
    at = (~anchors).expand(2, h, w).nonzero(as_tuple=True)
    got = masked_conv_at(conv, x, at)
    assert got.shape == (len(at[0]), 12)
    assert torch.allclose(got, conv(x)[at[0], :, at[1], at[2]], rtol=0, atol=1e-12)
    # it reads the anchors only: what sits at the non-anchors changes nothing
    noisy = x + torch.where(anchors, 0.0, torch.randn_like(x))
    assert torch.equal(masked_conv_at(conv, noisy, at), got)
