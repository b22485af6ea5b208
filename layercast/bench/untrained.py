"""A base model of another (smaller) architecture with untrained weights, for load benchmarks.

``layercast bench soak --untrained micro`` measures how many cameras one cloud process holds when
the network costs less, as the soak issue asks ("a small model sized so the CPU keeps up"). The
weights are random (seeded), the last layer of g_a scaled so latents are not all zero (LATENT_GAIN) (every
symbol is still entropy coded and decoded for real); the task model is the one of ``like``, so
the cloud runs the same detector on a synthesised task image. Its results mean nothing; its
bitstreams, bytes and costs are real.
"""

from __future__ import annotations

from pathlib import Path

import torch

from layercast.shared.codec.checkpoint import Checkpoint
from layercast.shared.codec.entropy import update_entropy_models
from layercast.shared.codec.factory import build_base
from layercast.shared.codec.registry import default_registry

#: g_a's last layer is multiplied by this so a 64x64 frame codes to about a trained model's size
#: (about 190 bytes against det-tiny's 116; more gain, more symbols far from zero, more bytes).
LATENT_GAIN = 3.0


def untrained_base(config: str, like: str, out_dir: Path, seed: int = 0) -> Path:
    """Write an untrained ``config`` base checkpoint carrying ``like``'s task model; returns its path."""
    ref = default_registry().load(like)
    base = build_base(config, seed=seed)
    with torch.no_grad():
        base.g_a.net[-1].weight.mul_(LATENT_GAIN)
        base.g_a.net[-1].bias.mul_(LATENT_GAIN)
    update_entropy_models(base, force=True)
    ckpt = Checkpoint(
        kind="base",
        config=base.config,
        state_dict={k: v.detach().cpu() for k, v in base.state_dict().items()},
        task=ref.task,
        training={"untrained": True, "seed": seed, "task_model_of": like},
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"untrained-{config}.pt"
    ckpt.save(path)
    return path
