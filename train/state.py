"""Training state on disk: resumable checkpoints and a plottable metrics log."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def save_state(
    path: Path, step: int, modules: dict[str, torch.nn.Module], optimizers: dict[str, Any], extra: dict
) -> None:
    """Atomically write everything needed to resume at ``step``."""
    state = {
        "step": step,
        "modules": {k: m.state_dict() for k, m in modules.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        "extra": extra,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_state(
    path: Path, modules: dict[str, torch.nn.Module], optimizers: dict[str, Any]
) -> tuple[int, dict]:
    from layercast.shared.codec.entropy import resize_entropy_buffers

    state = torch.load(path, map_location="cpu", weights_only=False)
    for k, m in modules.items():
        resize_entropy_buffers(m, state["modules"][k])
        m.load_state_dict(state["modules"][k])
    for k, o in optimizers.items():
        o.load_state_dict(state["optimizers"][k])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    return int(state["step"]), state.get("extra", {})


class MetricsLog:
    """Appends one CSV row per logged step (``metrics.csv``) — open it in any plotting tool."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fields: list[str] | None = None
        if path.exists():
            with path.open() as f:
                self._fields = next(csv.reader(f), None)

    def write(self, row: dict[str, float]) -> None:
        if self._fields is None:
            self._fields = list(row)
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self._fields)
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self._fields])


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, default=float))
