"""The fast CPU path of the integer entropy networks (shared/codec/intfast.py) gives the reference
layers' integers: layer by layer at the activation limit, and end to end (bytes, ŷ, enhancement)."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
import torch

from layercast.shared.codec import intfast
from layercast.shared.codec.intnet import A_MAX, compute_dtype
from layercast.shared.data.synth import SyntheticCamera
from tests.conftest import make_untrained_codec, smooth_image


@pytest.fixture(scope="module")
def codec():
    return make_untrained_codec()


def _extreme_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Integers in ±A_MAX, a third of them at the limits (where chunk bounds are reached)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-A_MAX, A_MAX + 1, shape, generator=g)
    edge = torch.randint(0, 3, shape, generator=g)
    x = torch.where(edge == 0, A_MAX, x)
    return torch.where(edge == 1, -A_MAX, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_convolution_chains_give_the_reference_integers(codec, dtype):
    """h_s (transposed convolutions, then a 3×3 one), the condition network and the channel
    context, channels-last on padded images, against ``Chain.__call__`` on the same integers."""
    base, enh = codec.base.latent_codec.integer, codec.enhancement.latent_codec.integer
    chains = [base.h_s, enh.condition, *(net for net in base.channel if net is not None)]
    for n, chain in enumerate(chains):
        ops = intfast._convs(chain)
        assert ops is not None
        c_in = ops[0].c_in
        x = _extreme_input((2, c_in, 5, 7), seed=n)
        expect = chain(x)
        out = torch.empty(expect.shape[0], *expect.shape[2:], expect.shape[1], dtype=dtype)
        with compute_dtype(dtype):
            intfast._run_convs(ops, intfast._padded(x, ops[0].p, dtype), ops[0].p, 0, out)
        assert torch.equal(out.permute(0, 3, 1, 2).long(), expect), n


def test_chunks_are_cut_at_the_bound_in_the_order_they_are_read(codec):
    """Each chunk's rows keep Σ|w|·A_MAX below 2^24 for every output channel, and together they
    read every weight row once (the anchors' parameter network has no spatial-context rows)."""
    fast = intfast.FastEntropy.of(codec.base.latent_codec.integer, codec.base.latent_codec.y_codec.groups)
    assert fast is not None
    first = fast.params[1].first
    assert len(first[False].weights) == len(first[True].weights) - 1
    products = [fast.spatial[1], first[True], first[False]]
    products += [fast.h_s[-1].products, *(p for *_, p in fast.h_s[0].phases)]  # type: ignore[index,union-attr]
    for prods in products:
        seen = {s: torch.zeros(w.shape[0], dtype=torch.int64) for s, w in enumerate(prods.weights)}
        for chunk in prods.chunks:
            bound = sum(prods.weights[s][k0:k1].double().abs().sum(0) * A_MAX for s, k0, k1 in chunk)
            assert float(bound.max()) < 2**24
            for s, k0, k1 in chunk:
                seen[s][k0:k1] += 1
        assert all(bool((v == 1).all()) for v in seen.values())


def test_streams_and_reconstructions_match_the_reference_path(codec):
    """Same bytes, ŷ and enhancement output on the fast path and the reference layers: sizes
    whose hyper grid is cropped, a batch of two images, and the products in float64."""
    rng = np.random.default_rng(7)
    images = [smooth_image(rng, 72, 104), smooth_image(rng, 72, 104), smooth_image(rng, 50, 130)]
    fast = codec.encode_batch(images)
    with intfast.reference_only():
        ref = codec.encode_batch(images)
    for f, r in zip(fast, ref, strict=True):
        assert f.base == r.base and f.enhancement == r.enhancement
        dec = codec.decode_base(f.base)
        with intfast.reference_only():
            dec_ref = codec.decode_base(f.base)
            enh_ref = codec.decode_enhancement(dec_ref, f.enhancement)
        with compute_dtype(torch.float64):
            dec64 = codec.decode_base(f.base)
        assert torch.equal(dec.y_hat, dec_ref.y_hat) and torch.equal(dec.y_hat, dec64.y_hat)
        assert torch.equal(codec.decode_enhancement(dec, f.enhancement), enh_ref)


def _scale_accumulators(head, last, g: torch.Generator) -> tuple[torch.Tensor, int]:
    """Scale accumulators (N, c) at, next to and between a head's thresholds (300 per channel),
    and at the last layer's bound either way; with that bound."""
    c = head.thresholds.shape[0]
    bound = last.acc_max
    t = head.thresholds.clamp(-bound, bound)
    at = t[torch.arange(c)[:, None], torch.randint(0, t.shape[1], (c, 300), generator=g)].t()
    scale = torch.cat([at + torch.randint(-1, 2, at.shape, generator=g), torch.full((2, c), bound)])
    scale[-1] = -bound
    return scale, bound


def test_heads_give_the_reference_indexes_and_means_at_the_thresholds(codec):
    """The compiled head against ``Head.__call__`` on accumulators at, next to and between the
    scale thresholds and at the layer's bound (the int32 sums and thresholds)."""
    from layercast.shared.codec import intkernels

    integer = codec.enhancement.latent_codec.integer
    fast = intfast.FastEntropy.of(integer, codec.enhancement.latent_codec.y_codec.groups)
    assert fast is not None
    g = torch.Generator().manual_seed(3)
    for k, params in enumerate(fast.params):
        head = integer.heads[k]
        scale, bound = _scale_accumulators(head, integer.params[k].layers[-1].lin, g)
        c = head.thresholds.shape[0]
        means = torch.randint(-bound, bound + 1, scale.shape, generator=g)
        acc = torch.cat([scale, means], dim=1)
        expect_idx, expect_mu = head(acc)
        parts = acc.double()[None, :, None, :].numpy()
        idx = np.empty((1, c, acc.shape[0]), np.int32)
        mu = np.empty((1, c, acc.shape[0]), np.int64)
        zero = np.zeros(2 * c, params.bias.dtype)
        m = head.means
        args = (parts, zero, params.thresholds, m.mult.numpy(), m.shift, m.lo, m.hi, idx, mu)
        intkernels.head(*args, np.empty(2 * c, params.bias.dtype))
        assert np.array_equal(idx[0].T, expect_idx.numpy()) and np.array_equal(mu[0].T, expect_mu.numpy())


@pytest.fixture(scope="module")
def shipped():
    from layercast.shared.codec import load_codec

    return load_codec("det-tiny", enhancement=None, device="cpu")


def test_p_frame_chains_give_the_reference_integers(shipped):
    """The P model's h_s, channel contexts and gated parameter networks (``FastChains``) against
    ``IntegerEntropy``'s, on a hyper grid that is cropped and on inputs across their range."""
    model = shipped.temporal.latent_codec._integer()
    chains = intfast.FastChains.of(model)
    assert chains.h_s is not None and any(c is not None for c in chains.channel)
    g = torch.Generator().manual_seed(5)
    z_sym = torch.randint(-40, 41, (2, shipped.temporal.latent_codec.z_entropy.channels, 3, 4), generator=g)
    assert torch.equal(chains.side(z_sym, (11, 14)), model.side(z_sym, None, (11, 14)))
    groups = shipped.config.groups
    done = [torch.randint(-4000, 4001, (2, c, 11, 14), generator=g) / 256.0 for c in groups]
    for k in range(len(groups)):
        expect = model.channel_ctx(k, done[:k])
        got = chains.channel_ctx(k, done[:k])
        assert (got is None and expect is None) or torch.equal(got, expect), k
    for k, c in enumerate(groups):  # the gated parameter networks on rows at the input limits
        width = model.params[k].layers[0].lin.weight.shape[0]
        for n in (0, 1, 300):
            rows = _extreme_input((n, width), seed=10 + k)
            ref = torch.randint(-(2**12), 2**12, (n, c), generator=g)
            for got, expect in zip(
                chains.params_at(k, rows, ref), model.params_at(k, rows, ref), strict=True
            ):
                assert torch.equal(got, expect), (k, n)


def test_p_frames_match_the_reference_path(shipped):
    """An intra frame and two P-frames of a fixed camera: the same bytes and ŷ on both paths."""
    from layercast.shared.codec.video import VideoDecoder, VideoEncoder
    from layercast.shared.data.synth import SyntheticCamera

    cam = SyntheticCamera(3, 192, 128, 10.0)
    images = [cam.frame(i).image for i in range(3)]
    fast = [f.base for f in map(VideoEncoder(shipped).encode, images, ["base"] * 3)]
    with intfast.reference_only():
        ref = [f.base for f in map(VideoEncoder(shipped).encode, images, ["base"] * 3)]
    assert fast == ref
    dec, dec_ref = VideoDecoder(shipped), VideoDecoder(shipped)
    for data in fast:
        y = dec.decode(data).y_hat
        with intfast.reference_only():
            assert torch.equal(y, dec_ref.decode(data).y_hat)


def _positions_of(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return mask.nonzero(as_tuple=True)  # type: ignore[return-value]


def _edge_positions(b: int, h: int, w: int, seed: int) -> torch.Tensor:
    """A (b, h, w) mask with the four corners, a border run and some inner positions of each image."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, h, w, generator=g) < 0.15
    mask[:, 0, 0] = mask[:, -1, -1] = mask[:, 0, -1] = mask[:, -1, 0] = True
    mask[0, :, 1] = True
    return mask


def test_p_frame_networks_at_positions_give_the_dense_integers(shipped):
    """At moving positions only (``FastChains``): the reference's features, the channel contexts,
    h_s (its last convolution next to the crop of the hyper grid) and the spatial contexts,
    against the reference layers on inputs at the activation limit, at the grid's corners and
    borders, for a batch of two and for no position at all."""
    model = shipped.temporal.latent_codec._integer()
    chains = intfast.FastChains.of(model)
    assert chains.whole and chains.h_s_last is not None
    b, h, w = 2, 11, 14
    at = _positions_of(_edge_positions(b, h, w, seed=1))
    none = _positions_of(torch.zeros(b, h, w, dtype=torch.bool))
    m = shipped.config.latent_channels
    ref_int = _extreme_input((b, m, h, w), seed=2)
    assert torch.equal(chains.condition_at(ref_int, at), model.condition_at(ref_int, at))
    assert chains.condition_at(ref_int, none).shape == (0, model.condition.layers[-1].lin.bias.numel())
    y_int = _extreme_input((b, m, h, w), seed=3)
    y_in = intfast._padded(y_int, 2, torch.float32)
    for k, convs in enumerate(chains.channel_at):
        if convs is None:
            continue
        dense = model.channel[k](y_int[:, : convs[0].conv.c_in])
        got = intfast._chain_at(convs, y_in, 2, 0, at, (h, w))
        assert torch.equal(got.long(), dense[at[0], :, at[1], at[2]]), k
    z_sym = torch.randint(
        -40, 41, (b, model.z_offset.numel(), 3, 4), generator=torch.Generator().manual_seed(4)
    )
    dense_hs = model.side(z_sym, None, (h, w))
    assert torch.equal(chains.h_s_at(z_sym, at).long(), dense_hs[at[0], :, at[1], at[2]])
    y_hat = (
        torch.randint(-(2**13), 2**13 + 1, (b, m, h, w), generator=torch.Generator().manual_seed(5)) / 256.0
    )
    y_in = intfast._padded(model.y_input(y_hat), 2, torch.float32)
    assert int(model.y_input(y_hat).abs().max()) == A_MAX  # the spatial context's inputs reach the limit
    offset = 0
    for k, c in enumerate(shipped.config.groups):
        expect = model.spatial_at(k, y_hat[:, offset : offset + c], at)
        assert torch.equal(chains.spatial_at(k, y_in, 2, offset, at).long(), expect), k
        assert chains.spatial_at(k, y_in, 2, offset, none).shape == (0, 2 * c)
        offset += c


def test_gated_heads_give_the_reference_indexes_and_means_at_the_thresholds(shipped):
    """The compiled gated head against ``Head.__call__``: scale accumulators at, next to and
    between the thresholds, gate accumulators through and beyond the gate's clamp, means at the
    layer's bound and references across the grid's range."""
    model = shipped.temporal.latent_codec._integer()
    chains = intfast.FastChains.of(model)
    g = torch.Generator().manual_seed(6)
    for k, params in enumerate(chains.params):
        head = model.heads[k]
        scale, bound = _scale_accumulators(head, model.params[k].layers[-1].lin, g)
        c = head.thresholds.shape[0]
        n = scale.shape[0]
        means = torch.randint(-bound, bound + 1, (n, c), generator=g)
        # gate accumulators whose requantised value spans the clamp [lo, hi] and beyond it
        gate = head.gate
        reach = int((gate.hi - gate.lo) * 2**gate.shift / int(gate.mult.min()))
        gates = torch.randint(-min(reach, bound), min(reach, bound) + 1, (n, c), generator=g)
        gates[:2] = torch.tensor([bound, -bound])[:, None]
        ref = torch.randint(-(2**22), 2**22 + 1, (n, c), generator=g)
        acc = torch.cat([scale, means, gates], dim=1)
        expect_idx, expect_mu = head(acc, ref)
        q = gate(acc[:, 2 * c :])
        assert int(q.min()) == gate.lo and int(q.max()) == gate.hi  # the sigmoid table's both ends
        parts = acc.double()[None, :, None, :].numpy()
        idx = np.empty((n, c), np.int32)
        mu = np.empty((n, c), np.int64)
        from layercast.shared.codec import intkernels

        zero = np.zeros(3 * c, params.bias.dtype)
        intkernels.gated_head(
            parts, zero, params.thresholds, params.means_q, params.gate_q, params.sigmoid, 15,
            ref.numpy(), idx, mu, np.empty(3 * c, params.bias.dtype),
        )  # fmt: skip
        assert np.array_equal(idx, expect_idx.numpy()) and np.array_equal(mu, expect_mu.numpy()), k


def test_p_frame_batches_match_the_reference_path(shipped):
    """P-frames of a batch (a moving camera and a still one), of a size whose hyper grid is
    cropped, and with every position coded (threshold 0): the same bytes and ŷ on both paths."""
    camera = SyntheticCamera(1, 200, 136, 10.0)
    still = camera.frame(0).image
    refs = [f.decoded for f in shipped.encode_batch([camera.frame(0).image, still], layers="base")]
    frames = [camera.frame(3).image, still]
    temporal = shipped.temporal
    kept = temporal.skip_threshold
    try:
        for threshold in (kept, 0.0):
            temporal.skip_threshold = threshold
            runs = []
            for fast in (True, False):
                with contextlib.ExitStack() as stack:
                    if not fast:
                        stack.enter_context(intfast.reference_only())
                    p = [f.base for f in shipped.encode_batch(frames, layers="base", references=refs)]
                    runs.append((p, [d.y_hat for d in shipped.decode_base_batch(p, references=refs)]))
            (fast_bytes, fast_y), (ref_bytes, ref_y) = runs
            assert fast_bytes == ref_bytes, threshold
            assert all(torch.equal(a, b) for a, b in zip(fast_y, ref_y, strict=True)), threshold
    finally:
        temporal.skip_threshold = kept


@pytest.mark.parametrize(("c_shift", "moves"), [(0, "some"), (-2, "some"), (0, "one non-anchor")])
def test_p_frame_steps_match_the_reference_steps(shipped, c_shift, moves):
    """``FastChains.steps_at`` against the reference layers' steps with the same coder stand-in
    (ŷ = mean + a step from the scale index): the same positions, counts, indexes and means at
    every call and the same ŷ, for a batch of two on a cropped hyper grid; with the reference at
    another fixed point than the context inputs (its features then read an image of their own);
    and with a single moving position, a non-anchor, so that the anchors' step codes nothing."""
    lc = shipped.temporal.latent_codec
    model = dataclasses.replace(lc._integer(), c_bits=lc._integer().c_bits + c_shift)
    g = torch.Generator().manual_seed(7)
    b, h, w = 2, 9, 13
    ref = torch.randint(-(2**12), 2**12 + 1, (b, shipped.config.latent_channels, h, w), generator=g) / 256.0
    moving = torch.rand(b, 1, h, w, generator=g) < 0.3
    moving[1, 0, -1, -1] = True
    if moves == "one non-anchor":
        moving[:] = False
        moving[1, 0, h - 1, 1] = True  # (i + j) odd, on the last row
    z_sym = torch.randint(-5, 6, (b, model.z_offset.numel(), 3, 4), generator=g)

    def coder(calls: list):
        def code(k, at, counts, indexes, means):
            calls.append((k, [t.tolist() for t in at], counts, indexes.clone(), means.clone()))
            return means + (indexes % 3 - 1).float()

        return code

    fast_calls: list = []
    ref_calls: list = []
    got = intfast.FastChains.of(model).steps_at(z_sym, ref, moving, coder(fast_calls))
    with intfast.reference_only():
        expect = lc.y_codec._sparse_steps(z_sym, ref, moving, model, coder(ref_calls))
    assert torch.equal(got, expect)
    assert len(fast_calls) == len(ref_calls) == 2 * len(shipped.config.groups)
    for (k, at, counts, idx, mu), (k2, at2, counts2, idx2, mu2) in zip(fast_calls, ref_calls, strict=True):
        assert (k, at, counts) == (k2, at2, counts2)
        assert torch.equal(idx, idx2) and torch.equal(mu, mu2), k


@pytest.mark.parametrize("deadzone", [0.5, 0.6, 0.75, 1.3])
def test_dead_zone_symbols_are_deadzone_round(deadzone):
    """The compiled quantiser of P-frame encodes against ``temporal.deadzone_round``: residuals at
    and next to the dead zone (float32 neighbours), at halves (ties to even), large and random."""
    from layercast.shared.codec import intkernels
    from layercast.shared.codec.temporal import deadzone_round

    dz = np.float32(deadzone)
    edges = [dz, np.nextafter(dz, np.float32(0)), np.nextafter(dz, np.float32(9)), 0.5, 1.5, 2.5, 0.0, 3e4]
    edges = np.array(edges, np.float32)
    rng = np.random.default_rng(8)
    residual = np.concatenate([edges, -edges, rng.normal(0, 2, 4000).astype(np.float32)])
    means = np.concatenate([np.zeros(2 * edges.size), rng.integers(-4000, 4000, 4000) / 256.0]).astype(
        np.float32
    )
    y = (residual + means).astype(np.float32)
    y, means = y.reshape(-1, 8), means.reshape(-1, 8)
    out = np.empty(y.shape, np.int32)
    intkernels.deadzone_symbols(y, means, dz, out)
    expect = deadzone_round(torch.from_numpy(y) - torch.from_numpy(means), deadzone).int()
    assert np.array_equal(out, expect.numpy())
    assert (out[:2] == 0).sum() > 0 and (out[:2] != 0).sum() > 0  # both sides of the dead zone
