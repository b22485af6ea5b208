"""Device selection: CUDA when present and asked for, else the CPU. Never assumes a GPU."""

from __future__ import annotations

import torch

from layercast.shared.errors import ConfigError


def select_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None → cuda if available else cpu; ``"cpu"``; ``"cuda"``/``"cuda:N"`` (error if absent)."""
    if isinstance(spec, torch.device):
        return spec
    if spec in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} requested but CUDA is not available on this machine")
    try:
        return torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"unknown device {spec!r}; use auto, cpu or cuda[:N]") from None
