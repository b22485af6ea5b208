"""On the CPU every integer network of an intra base and an enhancement layer (h_s, the condition
features, the channel and spatial contexts, the parameter networks and heads) runs on the fast
path (shared/codec/intfast.py): coding calls none of the reference layers."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from layercast.shared.codec import intnet, intparams, load_codec
from layercast.shared.codec.intfast import FastEntropy

REFERENCE = {
    intnet.Layer: ("apply",),
    intnet.Chain: ("__call__",),
    intnet.Linear: ("__call__", "products"),
    intparams.Head: ("__call__",),
    intparams.IntegerEntropy: ("side", "channel_ctx", "spatial_at", "params_at", "condition_at"),
}


def test_base_and_enhancement_coding_run_no_reference_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    codec = load_codec("det-tiny", device="cpu")
    calls: Counter[str] = Counter()
    for cls, names in REFERENCE.items():
        for name in names:
            original = getattr(cls, name)

            def counted(*args, _original=original, _key=f"{cls.__name__}.{name}", **kwargs):
                calls[_key] += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(cls, name, counted)
    image = (np.random.default_rng(4).random((96, 160, 3)) * 255).astype(np.uint8)
    frame = codec.encode(image)
    dec = codec.decode_base(frame.base)
    codec.reconstruct(dec, frame.enhancement)
    assert not calls, dict(calls)
    for layer in (codec.base, codec.enhancement):
        assert isinstance(layer.latent_codec.integer._fast, FastEntropy)  # type: ignore[union-attr]
