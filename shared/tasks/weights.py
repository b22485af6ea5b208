"""Loading task-model weights from a local file, never from the network.

Accepted files (``torch.load(..., weights_only=True)``):

* a plain state dict of the torchvision model (e.g. torchvision's own
  ``fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth`` copied by the user);
* a state dict of our wrapper (keys prefixed ``model.``);
* a checkpoint dict holding one of those under ``state_dict`` or ``model``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from layercast.shared.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What happened when a state dict was loaded."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` (see module docstring); raises ``ConfigError``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {str(path)!r} does not exist (weights are never downloaded)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, ...
        raise ConfigError(f"weights file {str(path)!r} cannot be read: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"weights file {str(path)!r} does not hold a state dict of tensors")
    return obj


def load_into(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    strict: bool = True,
    strip_prefixes: tuple[str, ...] = (),
    drop_prefixes: tuple[str, ...] = (),
    source: str = "state dict",
) -> LoadReport:
    """Copy ``state`` into ``module``.

    Keys starting with one of ``drop_prefixes`` are discarded, then the first
    matching prefixes of ``strip_prefixes`` are removed, repeatedly. With ``strict`` any
    missing, unexpected or mis-shaped key raises ``ConfigError``; otherwise
    mis-shaped and unexpected tensors are skipped (a classifier with another
    number of classes) and the report says which.
    """
    own = module.state_dict()
    report = LoadReport()
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if any(key.startswith(p) for p in drop_prefixes):
            continue
        stripped = True
        while stripped:  # "module.model.x" (DDP around a wrapper) -> "x"
            stripped = False
            for prefix in strip_prefixes:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix) :], True
                    break
        renamed[key] = value
    accepted: dict[str, torch.Tensor] = {}
    for key, value in renamed.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.shape_mismatch.append(f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            accepted[key] = value
    report.missing = sorted(set(own) - set(accepted))
    report.loaded = sorted(accepted)
    if strict and (report.missing or report.unexpected or report.shape_mismatch):
        raise ConfigError(
            f"{source} does not match the model: {len(report.missing)} missing (e.g. {report.missing[:3]}), "
            f"{len(report.unexpected)} unexpected (e.g. {report.unexpected[:3]}), "
            f"mis-shaped {report.shape_mismatch[:3]}; pass strict=False to load what fits"
        )
    module.load_state_dict(accepted, strict=False)
    if report.missing or report.shape_mismatch:
        log.warning(
            "%s: loaded %d tensors, %d left at initialisation, %d mis-shaped skipped",
            source,
            len(report.loaded),
            len(report.missing),
            len(report.shape_mismatch),
        )
    return report


def load_weights_file(
    module: nn.Module,
    path: str | Path,
    *,
    strict: bool = True,
    strip_prefixes: tuple[str, ...] = ("module.", "model."),
    drop_prefixes: tuple[str, ...] = (),
) -> LoadReport:
    """``read_state_dict`` then ``load_into`` (DDP ``module.`` and wrapper ``model.`` prefixes stripped)."""
    return load_into(
        module,
        read_state_dict(path),
        strict=strict,
        strip_prefixes=strip_prefixes,
        drop_prefixes=drop_prefixes,
        source=f"weights file {str(path)!r}",
    )
