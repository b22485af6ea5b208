"""Build codec modules and turn trained modules into checkpoints."""

from __future__ import annotations

from typing import Any

import torch

from layercast.shared.codec.base_layer import BaseLayer
from layercast.shared.codec.checkpoint import Checkpoint
from layercast.shared.codec.configs import CodecConfig, get_config
from layercast.shared.codec.enhancement import EnhancementLayer
from layercast.shared.codec.entropy import update_entropy_models
from layercast.shared.codec.temporal import TemporalLayer


def build_base(config: str | CodecConfig, seed: int | None = None) -> BaseLayer:
    cfg = get_config(config) if isinstance(config, str) else config
    if seed is not None:
        torch.manual_seed(seed)
    return BaseLayer(cfg)


def build_enhancement(
    config: str | CodecConfig,
    base_channels: int,
    target: str = "reconstruction",
    standalone: bool = False,
    seed: int | None = None,
) -> EnhancementLayer:
    cfg = get_config(config) if isinstance(config, str) else config
    if seed is not None:
        torch.manual_seed(seed)
    return EnhancementLayer(cfg, base_channels, target=target, standalone=standalone)  # type: ignore[arg-type]


def base_checkpoint(
    base: BaseLayer,
    task_model: torch.nn.Module | None = None,
    task: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Checkpoint:
    """Freeze the entropy models' CDF tables and package a base layer (and its task model)."""
    update_entropy_models(base, force=True)
    task_info = None
    if task_model is not None:
        task_info = {
            **(task or {}),
            "state_dict": {k: v.detach().cpu() for k, v in task_model.state_dict().items()},
        }
    return Checkpoint(
        kind="base",
        config=base.config,
        state_dict={k: v.detach().cpu() for k, v in base.state_dict().items()},
        task=task_info,
        training=training or {},
        metrics=metrics or {},
    )


def enhancement_checkpoint(
    enh: EnhancementLayer,
    base_model_id: str,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Checkpoint:
    update_entropy_models(enh, force=True)
    return Checkpoint(
        kind="enhancement",
        config=enh.config,
        state_dict={k: v.detach().cpu() for k, v in enh.state_dict().items()},
        enhancement={"target": enh.target, "standalone": enh.standalone, "base_model_id": base_model_id},
        training=training or {},
        metrics=metrics or {},
    )


def temporal_checkpoint(
    layer: TemporalLayer,
    base_model_id: str,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    *,
    intra: torch.nn.Module | None = None,
) -> Checkpoint:
    """Freeze the CDF tables and package the P-frame model of the base ``base_model_id``.

    ``intra`` (the base's latent codec): its Gaussian tables are copied rather than rebuilt, so
    intra and predicted frames code ŷ with the very same integer tables."""
    update_entropy_models(layer, force=True)
    if intra is not None:
        src, dst = intra.y_codec.gaussian, layer.latent_codec.y_codec.gaussian
        for name in ("_quantized_cdf", "_offset", "_cdf_length", "scale_table"):
            setattr(dst, name, getattr(src, name).detach().clone().to(getattr(dst, name).dtype))
    return Checkpoint(
        kind="temporal",
        config=layer.config,
        state_dict={
            k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu()
            for k, v in layer.state_dict().items()
        },
        temporal={"base_model_id": base_model_id},
        training=training or {},
        metrics=metrics or {},
    )
