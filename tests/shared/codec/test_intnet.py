"""The integer layer kit (shared/codec/intnet.py) and the integer entropy models built with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from layercast.shared.codec import bitstream, intparams
from layercast.shared.codec.bitstream import LayerKind
from layercast.shared.codec.intnet import (
    A_MAX,
    EXACT,
    RangeMeter,
    Requant,
    compute_dtype,
    convert,
    frac_bits,
)
from layercast.shared.codec.layers import deconv
from layercast.shared.errors import UnknownModel
from tests.conftest import make_untrained_codec, smooth_image


def _float_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        deconv(16, 16), nn.ELU(), deconv(16, 24), nn.ELU(), nn.Conv2d(24, 32, 3, padding=1)
    ).eval()


def _integer(net: nn.Sequential, x: torch.Tensor):
    meter = RangeMeter(list(net))
    with torch.no_grad():
        ref = net(x)
    meter.close()
    f_in, f_out = frac_bits(float(x.abs().max())), frac_bits(float(ref.abs().max()))
    n = x.shape[1]
    chain = convert(net, meter, torch.full((n,), 2.0**-f_in), torch.full((n,), float(A_MAX)), f_out)
    return chain, f_in, f_out, ref


def _quantised_input(x: torch.Tensor, f: int) -> torch.Tensor:
    return torch.round(x * 2**f).long().clamp(-A_MAX, A_MAX)


def test_every_chunk_keeps_its_partial_sums_below_2_pow_24():
    codec = make_untrained_codec()
    for lc in (codec.base.latent_codec, codec.enhancement.latent_codec):
        layers = intparams.layers_of(lc.integer)
        assert len(layers) >= 10
        split = 0
        for layer in layers:
            k = layer.lin.weight.shape[0]
            bounds = layer.lin.chunk_bounds(torch.full((k,), float(A_MAX)))
            assert max(bounds) < EXACT
            split += len(bounds) > 1
        assert split  # some layers are long enough to need chunks: the bound is what splits them


def test_float32_and_float64_products_give_the_same_integers_batch_and_threads_alike():
    net = _float_net()
    x = torch.randn(4, 16, 6, 9) * 3
    chain, f_in, _, _ = _integer(net, x)
    xi = _quantised_input(x, f_in)
    out = chain(xi)
    with compute_dtype(torch.float64):
        assert torch.equal(chain(xi), out)
    one = torch.cat([chain(xi[i : i + 1]) for i in range(4)])
    assert torch.equal(one, out)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = chain(xi)
        torch.set_num_threads(2)
        double = chain(xi)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, out) and torch.equal(double, out)


def test_integer_net_is_close_to_the_float_net():
    net = _float_net()
    x = torch.randn(2, 16, 6, 9) * 3
    chain, f_in, f_out, ref = _integer(net, x)
    got = chain(_quantised_input(x, f_in)).double() * 2.0**-f_out
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) < 0.02 * float(ref.abs().max())


def test_elu_table_is_elu_rounded_to_the_grid():
    f = 8
    rq = Requant.to_grid(torch.tensor([2.0**-f], dtype=torch.float64), f, 2**20, elu=True)
    acc = torch.arange(-3000, 600, dtype=torch.int64)[:, None]
    expect = torch.round(torch.nn.functional.elu(acc.double() * 2.0**-f) * 2**f).long()
    assert torch.equal(rq(acc), expect.clamp(max=A_MAX))
    assert int(rq(torch.tensor([[-(10**6)]]))) == -(2**f)  # saturates at -1


def test_scale_indexes_match_the_float_scale_table():
    """The integer thresholds give the index CompressAI's table gives the accumulator's scale."""
    codec = make_untrained_codec()
    gaussian = codec.base.latent_codec.y_codec.gaussian
    levels = gaussian.scale_table[:-1].double()
    c, s0 = 4, 1.0 / 4096  # accumulator scale: acc · s0 is the scale
    head = intparams.Head.build(torch.full((2 * c,), s0, dtype=torch.float64), 2**40, levels, c, False)
    scale = torch.exp(torch.linspace(-3, 6, 4000, dtype=torch.float64))
    acc = torch.round(scale / s0).long()
    idx, _ = head(acc[:, None].expand(-1, 2 * c).contiguous())
    expect = gaussian.build_indexes(acc.double() * s0)
    assert torch.equal(idx, expect[:, None].expand(-1, c).int())
    assert idx.min() == 0 and idx.max() == len(levels)


def test_integer_model_survives_its_state():
    codec = make_untrained_codec()
    lc = codec.base.latent_codec
    again = intparams.IntegerEntropy.from_state(lc.integer.state(), intparams.spatial_taps(lc))
    assert all(not v.is_floating_point() for v in lc.integer.state().values())
    z = torch.randint(-3, 4, (1, 32, 2, 3))
    assert torch.equal(again.side(z, None, (8, 12)), lc.integer.side(z, None, (8, 12)))


def test_model_id_names_the_integer_model_and_a_float_path_stream_is_refused():
    codec = make_untrained_codec()
    float_id = codec.base_ckpt.__class__(
        codec.base_ckpt.kind,
        codec.base_ckpt.config,
        intparams.split(codec.base_ckpt.state_dict)[0],
        codec.base_ckpt.task,
    ).model_id
    assert float_id != codec.base_model_id
    frame = codec.encode(smooth_image(np.random.default_rng(0), 64, 64))
    h = codec.parse_header(frame.base)
    old = bitstream.pack_layer(LayerKind.BASE, float_id, h.width, h.height, bitstream.payload(frame.base), 0)
    with pytest.raises(UnknownModel, match="coded by model"):
        codec.decode_base(old)


def test_transposed_convolution_is_exact_at_its_phase_bound():
    """A transposed convolution adds at each output the taps of one phase only; its chunks are cut
    at that bound, and inputs at the activation limit still give F.conv_transpose2d's integers."""
    from layercast.shared.codec.intnet import EXACT, Linear, deconv_image, deconv_weight

    torch.manual_seed(2)
    d = deconv(48, 8).eval()
    bound = torch.full((48,), float(A_MAX))
    lin, _ = Linear.quantise(deconv_weight(d.weight), d.bias, torch.ones(48), bound, 25, 2)
    assert max(lin.chunk_bounds(bound)) < EXACT
    all_taps, _ = Linear.quantise(deconv_weight(d.weight), d.bias, torch.ones(48), bound, 25, 1)
    assert len(lin.splits) < len(all_taps.splits)  # fewer chunks than a bound over all 25 taps
    w = lin.weight.reshape(48, 8, 5, 5).double()
    x = torch.randint(-A_MAX, A_MAX + 1, (2, 48, 6, 7))
    x[0] = torch.where(w.sum((1, 2, 3))[:, None, None] >= 0, A_MAX, -A_MAX)  # the worst case
    expect = torch.nn.functional.conv_transpose2d(x.double(), w, stride=2, padding=2, output_padding=1)
    got = deconv_image(lin, x, 5, 2, 2, 8) - lin.bias[:, None, None]
    assert torch.equal(got, expect.long())
