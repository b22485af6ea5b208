"""`layercast train temporal`: a short run exports a P model that codes a camera's P-frames."""

from __future__ import annotations

import csv

import pytest
import torch

from layercast.shared.codec import load_codec
from layercast.shared.codec.bitstream import LayerKind
from layercast.shared.codec.registry import ZOO_DIR
from layercast.shared.codec.temporal import DeadzoneGaussianConditional
from layercast.shared.codec.video import VideoDecoder, VideoEncoder
from layercast.shared.data.synth import SyntheticCamera
from layercast.train.temporal import TemporalTrainConfig, train_temporal


def _config(tmp_path, **kw) -> TemporalTrainConfig:
    kw.setdefault("base", "det-tiny")
    return TemporalTrainConfig(
        out=tmp_path,
        cameras=2,
        frames=3,
        sizes=((64, 64),),
        steps=2,
        batch=2,
        unroll=2,
        save_every=1,
        threads=1,
        **kw,
    )


def test_a_short_run_from_the_shipped_model_exports_a_p_model_that_codes(tmp_path):
    cfg = _config(tmp_path, init=str(ZOO_DIR / "det-tiny-temporal.pt"), skip_threshold=0.4, deadzone=0.6)
    path = train_temporal(cfg)
    assert (tmp_path / "state.pt").exists()
    codec = load_codec("det-tiny", enhancement=None, temporal=str(path), device="cpu")
    cam = SyntheticCamera(2, 96, 64, 10.0)
    enc, dec = VideoEncoder(codec, intra_period=5), VideoDecoder(codec)
    kinds = []
    for i in range(3):
        frame = enc.encode(cam.frame(i).image, layers="base")
        assert dec.decode(frame.base).y_hat.equal(frame.decoded.y_hat)
        kinds.append(frame.kind)
    assert kinds == [LayerKind.BASE, LayerKind.PREDICTED, LayerKind.PREDICTED]


def test_a_temporal_model_of_another_base_is_refused_as_a_start(tmp_path):
    with pytest.raises(ValueError, match="not a temporal model of base"):
        train_temporal(_config(tmp_path, base="depth-tiny", init=str(ZOO_DIR / "det-tiny-temporal.pt")))


def test_dead_zone_straight_through_gives_the_mean_the_error_inside_the_dead_zone():
    """Inside the dead zone ŷ is the mean, so ŷ's error moves with the mean; outside it ŷ follows y."""
    g = DeadzoneGaussianConditional(deadzone=0.6)
    y = torch.tensor([0.3, -0.55, 0.7, -1.4, 2.2])
    means = torch.zeros(5, requires_grad=True)
    y_hat = g.quantize(y, "noise", means)
    assert y_hat.tolist() == [0.0, 0.0, 1.0, -1.0, 2.0]  # the forward values are the coded ones
    (y_hat - y).pow(2).sum().backward()
    inside = 2 * (0 - y[:2])  # d/dμ (μ − y)² at μ = 0
    assert torch.allclose(means.grad, torch.cat([inside, torch.zeros(3)]))


def test_a_run_with_the_distortion_term_logs_it(tmp_path):
    cfg = _config(tmp_path, init=str(ZOO_DIR / "det-tiny-temporal.pt"), skip_threshold=0.0, distortion=2.0)
    cfg.steps = 25  # one logged row
    train_temporal(cfg)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert float(rows[-1]["dpp"]) > 0 and float(rows[-1]["bpp"]) > 0
