"""`layercast train temporal`: a short run exports a P model that codes a camera's P-frames."""

from __future__ import annotations

import pytest

from layercast.shared.codec import load_codec
from layercast.shared.codec.bitstream import LayerKind
from layercast.shared.codec.registry import ZOO_DIR
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
