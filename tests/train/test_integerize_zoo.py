"""`layercast train ship` ends by giving the zoo's models their integer entropy models."""

from __future__ import annotations

import numpy as np
import pytest

from layercast.shared.codec import load_codec
from layercast.shared.codec.checkpoint import load_checkpoint
from layercast.shared.codec.factory import (
    base_checkpoint,
    build_base,
    build_enhancement,
    enhancement_checkpoint,
    temporal_checkpoint,
)
from layercast.shared.codec.registry import Registry
from layercast.shared.codec.temporal import TemporalLayer
from layercast.shared.data.synth import SyntheticCamera
from layercast.train.recipes import integerize_zoo


def _integer_keys(ckpt) -> int:
    return sum(k.startswith("integer.") for k in ckpt.state_dict)


@pytest.mark.parametrize("name", ["det-tiny", "depth-tiny"])
def test_every_shipped_model_carries_its_integer_model(name):
    reg = Registry()
    base = reg.load(name)
    assert _integer_keys(base)
    for entry in (reg.enhancement_for(base.model_id), reg.temporal_for(base.model_id)):
        assert entry is not None and _integer_keys(load_checkpoint(entry.path))


def test_integerize_zoo_converts_and_relinks_and_keeps_what_it_made(tmp_path):
    base = build_base("tiny", seed=0)
    enh = build_enhancement("tiny", base.config.latent_channels, seed=1)
    cb = base_checkpoint(base)
    cb.save(tmp_path / "b.pt")
    enhancement_checkpoint(enh, cb.model_id).save(tmp_path / "b-rec.pt")
    layer = TemporalLayer.from_intra(base.latent_codec, base.config)
    temporal_checkpoint(layer, cb.model_id, intra=base.latent_codec).save(tmp_path / "b-temporal.pt")

    renamed = integerize_zoo(tmp_path)
    new_id = renamed[cb.model_id]
    assert new_id != cb.model_id
    ckpts = {p.stem: load_checkpoint(p) for p in tmp_path.glob("*.pt")}
    assert all(_integer_keys(c) for c in ckpts.values())
    assert ckpts["b"].model_id == new_id
    assert ckpts["b-rec"].enhancement["base_model_id"] == new_id
    assert ckpts["b-temporal"].temporal["base_model_id"] == new_id

    codec = load_codec("b", registry=Registry([tmp_path]), device="cpu", runtime="torch")
    assert codec.model_ids == {
        "base": new_id,
        "enhancement": ckpts["b-rec"].model_id,
        "temporal": ckpts["b-temporal"].model_id,
    }
    assert codec.base_model_id == new_id and codec.temporal is not None and codec.enhancement is not None
    cam = SyntheticCamera(5, 128, 64, 10.0)
    f0 = codec.encode(cam.frame(0).image)
    f1 = codec.encode(cam.frame(1).image, reference=f0.decoded)
    d0 = codec.decode_base(f0.base)
    d1 = codec.decode_base(f1.base, reference=d0)
    assert np.array_equal(d1.y_hat.numpy(), f1.decoded.y_hat.numpy())

    assert integerize_zoo(tmp_path) == {new_id: new_id}  # converted models are kept as they are
