"""Checkpoints and the registry: ids that name exact weights, compact files, lookups and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from layercast.shared.codec.api import ScalableCodec
from layercast.shared.codec.checkpoint import load_checkpoint
from layercast.shared.codec.registry import Registry
from layercast.shared.errors import UnknownModel
from tests.conftest import make_untrained_codec, smooth_image


@pytest.fixture(scope="module")
def codec():
    return make_untrained_codec()


def test_save_load_keeps_model_id(codec, tmp_path):
    path = tmp_path / "b.pt"
    model_id = codec.base_ckpt.save(path)
    assert model_id == codec.base_model_id
    assert load_checkpoint(path).model_id == model_id


def test_compact_checkpoint_is_smaller_and_decodes_identically(codec, tmp_path):
    full, small = tmp_path / "full.pt", tmp_path / "small.pt"
    codec.base_ckpt.save(full)
    ckpt = load_checkpoint(full)
    ckpt.to_half()
    model_id = ckpt.save(small, compact=True)
    assert small.stat().st_size < 0.6 * full.stat().st_size
    reloaded = load_checkpoint(small)
    assert reloaded.model_id == model_id != codec.base_model_id  # rounded weights are other weights
    a, b = ScalableCodec(reloaded, device="cpu"), ScalableCodec(load_checkpoint(small), device="cpu")
    frame = a.encode(smooth_image(np.random.default_rng(0), 64, 64))
    assert np.array_equal(a.preview(a.decode_base(frame.base)), b.preview(b.decode_base(frame.base)))


def test_compact_checkpoint_keeps_the_entropy_models_floors(codec, tmp_path):
    """float16 would round CompressAI's 1e-9 likelihood floor to 0, and a zero floor lets a training
    step's rate estimate reach log(0) (a warm start from the shipped files crashed at step 1421 with
    bpp = inf). Compact files keep such tensors in float32, and loading never takes the floors from a
    file, so files written before the fix load with the right ones."""
    import torch

    from layercast.shared.codec.base_layer import BaseLayer
    from layercast.shared.codec.entropy import load_weights

    floors = [k for k in codec.base_ckpt.state_dict if k.endswith("likelihood_lower_bound.bound")]
    assert floors
    ckpt = codec.base_ckpt
    ckpt.save(tmp_path / "full.pt")
    ckpt = load_checkpoint(tmp_path / "full.pt")
    ckpt.to_half()
    ckpt.save(tmp_path / "small.pt", compact=True)
    reloaded = load_checkpoint(tmp_path / "small.pt")
    for k in floors:
        assert reloaded.state_dict[k].item() == pytest.approx(1e-9)

    # a state dict with spoiled floors (as an old compact file holds) loads with the module's own
    spoiled = {k: (torch.zeros_like(v) if k in floors else v) for k, v in reloaded.state_dict.items()}
    base = BaseLayer(reloaded.config)
    load_weights(base, spoiled)
    state = base.state_dict()
    for k in floors:
        assert state[k].item() == pytest.approx(1e-9)
    base.train()
    x = torch.zeros(1, 3, 64, 64)
    x[..., 32:, :] = 1.0  # a hard edge: far-out symbols whose likelihood underflows without the floor
    out = base(x)
    assert all(torch.isfinite(torch.log(v)).all() for v in out["likelihoods"].values())


def test_corrupted_checkpoint_is_refused(codec, tmp_path):
    path = tmp_path / "b.pt"
    codec.base_ckpt.save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UnknownModel):
        load_checkpoint(path)


def test_registry_lookup_by_name_alias_and_id(codec, tmp_path):
    codec.base_ckpt.save(tmp_path / "my-base.pt")
    codec.enh_ckpt.save(tmp_path / "my-base-rec.pt")
    (tmp_path / "aliases.json").write_text(json.dumps({"favourite": "my-base"}))
    reg = Registry([tmp_path])
    assert reg.resolve("my-base").model_id == codec.base_model_id
    assert reg.resolve("favourite").name == "my-base"
    assert reg.resolve(codec.base_model_id).name == "my-base"
    assert reg.enhancement_for(codec.base_model_id).name == "my-base-rec"
    with pytest.raises(UnknownModel, match="no model named or with id 'nope'"):
        reg.resolve("nope")


def test_shipped_models_load_and_pair_up():
    reg = Registry()
    bases = [e for e in reg.entries() if e.kind == "base"]
    assert bases, "the package ships at least one base model"
    for e in bases:
        enh = reg.enhancement_for(e.model_id)
        assert enh is not None, f"{e.name} has no reconstruction enhancement model"
    assert reg.resolve("default").kind == "base"
