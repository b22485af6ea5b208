"""Shared fixtures: small codecs built on the spot (no download, no shipped weights needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layercast.shared.codec.api import ScalableCodec
from layercast.shared.codec.factory import (
    base_checkpoint,
    build_base,
    build_enhancement,
    enhancement_checkpoint,
)


def make_untrained_codec(config: str = "tiny", gain: float = 30.0, seed: int = 0, **kwargs) -> ScalableCodec:
    """A codec with random weights whose latents are scaled up so that symbols are varied
    (an untrained g_a outputs values near zero, which would code to all-zero symbols)."""
    base = build_base(config, seed=seed)
    enh = build_enhancement(config, base.config.latent_channels, seed=seed + 1)
    with torch.no_grad():
        for g_a in (base.g_a, enh.g_a):
            last = g_a.net[-1]
            last.weight.mul_(gain)
            last.bias.mul_(gain)
    cb = base_checkpoint(base)
    ce = enhancement_checkpoint(enh, cb.model_id)
    return ScalableCodec(cb, ce, device="cpu", **kwargs)


@pytest.fixture(scope="session")
def untrained_codec() -> ScalableCodec:
    return make_untrained_codec()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random but image-like picture: low-frequency colour fields plus a little noise."""
    small = rng.uniform(0, 255, size=(max(h // 16, 2), max(w // 16, 2), 3))
    t = torch.from_numpy(small).permute(2, 0, 1)[None].float()
    big = torch.nn.functional.interpolate(t, size=(h, w), mode="bicubic", align_corners=False)[0].permute(
        1, 2, 0
    )
    img = big.numpy() + rng.normal(0, 6, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)
