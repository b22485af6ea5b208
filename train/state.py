"""Training state on disk: resumable checkpoints and a plottable metrics log.

A resume file (``state.pt``) holds only tensors and plain Python values (the numpy RNG state is
stored as a list), and is read with ``torch.load(weights_only=True)``: a file that asks the
unpickler for any other object (a pickled callable, say) is refused with
:class:`UnsafeStateFile` instead of running it.
"""

from __future__ import annotations

import csv
import json
import pickle
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
        "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_rng_state(), "python": random.getstate()},
        "extra": extra,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


class UnsafeStateFile(ValueError):
    """A resume file holds something other than tensors and plain values."""


def _numpy_rng_state() -> tuple:
    """``np.random.get_state()`` with its key array as a list of ints (no ndarray in the file)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return (name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached))


def _set_numpy_rng_state(state: Any) -> None:
    name, keys, pos, has_gauss, cached = state
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def read_state(path: Path) -> dict:
    """The resume file's contents, unpickled with ``weights_only=True``; UnsafeStateFile otherwise."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeStateFile(
            f"{path}: refused to load: it holds objects other than tensors and plain values "
            f"(resume files are read with weights_only=True): {str(exc).splitlines()[0]}"
        ) from None
    if not isinstance(state, dict) or not {"step", "modules", "optimizers", "rng"} <= state.keys():
        raise UnsafeStateFile(f"{path}: not a layercast resume file (step, modules, optimizers, rng)")
    return state


def load_state(
    path: Path, modules: dict[str, torch.nn.Module], optimizers: dict[str, Any]
) -> tuple[int, dict]:
    from layercast.shared.codec.entropy import resize_entropy_buffers

    state = read_state(path)
    for k, m in modules.items():
        resize_entropy_buffers(m, state["modules"][k])
        m.load_state_dict(state["modules"][k])
    for k, o in optimizers.items():
        o.load_state_dict(state["optimizers"][k])
    torch.set_rng_state(state["rng"]["torch"])
    _set_numpy_rng_state(state["rng"]["numpy"])
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
