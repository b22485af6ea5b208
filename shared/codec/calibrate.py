"""Calibration of the integer entropy models: a few real latents from the synthetic cameras.

:func:`integer_models` derives (``intparams.derive``) the integer model of each float latent codec
it is given, from the latents of short synthetic street clips (``shared/data``'s generator, made
in-process and deterministic by seed): the intra latents for the base, the enhancement latents with
their base latents as the condition, consecutive frames' latents for the P-frame model. It runs
in float32 on the CPU, once per model; :func:`convert` (``layercast train ship`` runs it on the
zoo) stores the result in the checkpoints, so a shipped model is never calibrated again.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from layercast.shared.codec.intparams import IntegerEntropy, derive

#: The calibration clips: (seed, frames) of 256×192 synthetic street cameras.
CLIPS = ((11, 3), (12, 3))
WIDTH, HEIGHT = 256, 192


def calibration_clips() -> list[np.ndarray]:
    """The clips' frames as uint8 HxWx3 images, clip after clip."""
    from layercast.shared.data.synth import SyntheticCamera

    frames = []
    for seed, n in CLIPS:
        cam = SyntheticCamera(seed, WIDTH, HEIGHT, 10.0)
        frames += [cam.frame(i).image for i in range(n)]
    return frames


def _as_batch(images: list[np.ndarray], multiple: int) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255)
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple), mode="replicate")


def _cpu(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).cpu().float().eval()


@torch.no_grad()
def integer_models(
    base, enhancement=None, temporal=None, kinds=("base", "enhancement", "temporal")
) -> dict[str, IntegerEntropy]:
    """The integer models of the float ``base`` (a ``BaseLayer``) and, when given, ``enhancement``
    (an ``EnhancementLayer`` on it) and ``temporal`` (its ``TemporalLayer``), for the ``kinds`` asked."""
    x = _as_batch(calibration_clips(), base.config.pad_multiple)
    base_lc = _cpu(base.latent_codec)
    y = _cpu(base.g_a)(x)
    y_hat = base_lc(y)["y_hat"]
    out: dict[str, IntegerEntropy] = {}
    if "base" in kinds:
        out["base"] = derive(base_lc, [(y, None)])
    if enhancement is not None and "enhancement" in kinds:
        cond = enhancement.condition(y_hat)
        out["enhancement"] = derive(_cpu(enhancement.latent_codec), [(_cpu(enhancement.g_a)(x), cond)])
    if temporal is not None and "temporal" in kinds:
        starts = np.cumsum([0] + [n for _, n in CLIPS])
        cur = torch.cat([y[a + 1 : b] for a, b in zip(starts[:-1], starts[1:], strict=True)])
        ref = torch.cat([y_hat[a : b - 1] for a, b in zip(starts[:-1], starts[1:], strict=True)])
        lc = _cpu(temporal.latent_codec)
        lc.skip_threshold = temporal.latent_codec.skip_threshold
        out["temporal"] = derive(lc, [(cur, ref)])
    return out


def convert(base, enhancement=None, temporal=None):
    """``(base, enhancement, temporal)`` checkpoints carrying their integer models (calibrated for
    those without one), the enhancement's and the temporal model's ``base_model_id`` pointing at
    the converted base's model id."""
    from layercast.shared.codec.api import ScalableCodec

    codec = ScalableCodec(base, enhancement, temporal, device="cpu", runtime="torch")
    return codec.base_ckpt, codec.enh_ckpt, codec.temporal_ckpt
