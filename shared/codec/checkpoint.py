"""Checkpoint files: weights plus everything needed to rebuild and trust them.

A checkpoint is a ``torch.save`` dict loadable with ``weights_only=True``::

    format       "layercast-checkpoint/1"
    kind         "base" | "enhancement" | "temporal"
    model_id     16 hex chars: SHA-256 over the weights (codec + task), checked on load
    config       CodecConfig as a dict
    state_dict   codec weights, including the integer CDF tables of the entropy models
    task         base: {"name", "kwargs", "state_dict", "class_names"}; enhancement: None
    enhancement  enhancement: {"target", "standalone", "base_model_id"}; otherwise None
    temporal     temporal (the P-frame model of a base layer): {"base_model_id"}; otherwise None
    training     recipe and summary (λ, β, steps, wall time, ...)
    metrics      evaluation summary (bpp, mAP / RMSE / PSNR, ...)

The model id written into every bitstream is this hash, so a bitstream names
the exact weights that can decode it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from layercast.shared.codec.configs import CodecConfig
from layercast.shared.errors import UnknownModel

FORMAT = "layercast-checkpoint/1"


def weights_digest(*state_dicts: dict[str, torch.Tensor] | None) -> str:
    """Stable id of a set of weights: names, dtypes, shapes and little-endian bytes, in sorted order."""
    h = hashlib.sha256()
    for sd in state_dicts:
        if not sd:
            continue
        for name in sorted(sd):
            t = sd[name].detach().cpu().contiguous()
            h.update(name.encode())
            h.update(str(t.dtype).encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()[:16]


@dataclass
class Checkpoint:
    kind: str
    config: CodecConfig
    state_dict: dict[str, torch.Tensor]
    task: dict[str, Any] | None = None
    enhancement: dict[str, Any] | None = None
    temporal: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def model_id(self) -> str:
        return weights_digest(self.state_dict, (self.task or {}).get("state_dict"))

    @property
    def name(self) -> str:
        return self.path.stem if self.path else self.model_id

    def to_half(self) -> None:
        """Round every float weight to float16 (kept as float32 in memory): the compact form shipped
        in the package. The model id then names the rounded weights, which load identically anywhere."""
        self.state_dict = _rounded(self.state_dict)
        if self.task and self.task.get("state_dict"):
            self.task = {**self.task, "state_dict": _rounded(self.task["state_dict"])}

    def save(self, path: str | Path, *, compact: bool = False) -> str:
        """Write the checkpoint; ``compact`` stores float weights as float16 in a gzip file
        (call ``to_half`` first so the in-memory weights and the model id match the file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        model_id = self.model_id
        data = {
            "format": FORMAT,
            "kind": self.kind,
            "model_id": model_id,
            "config": self.config.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict.items()},
            "task": self.task,
            "enhancement": self.enhancement,
            "temporal": self.temporal,
            "training": self.training,
            "metrics": self.metrics,
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        if compact:
            data["state_dict"] = _as_half(data["state_dict"])
            if data["task"] and data["task"].get("state_dict"):
                data["task"] = {**data["task"], "state_dict": _as_half(data["task"]["state_dict"])}
            buf = io.BytesIO()
            torch.save(data, buf)
            with gzip.open(tmp, "wb", compresslevel=9) as f:
                f.write(buf.getvalue())
        else:
            torch.save(data, tmp)
        tmp.replace(path)
        self.path = path
        return model_id


def _halvable(v: torch.Tensor) -> bool:
    """float32 that float16 holds without losing a value: none overflows and none non-zero
    becomes zero (such as CompressAI's 1e-9 likelihood floor, which float16 rounds to 0)."""
    if v.dtype != torch.float32:
        return False
    h = v.detach().half()
    return torch.equal(torch.isfinite(h), torch.isfinite(v)) and not bool(((h == 0) & (v != 0)).any())


def _rounded(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.half().float() if _halvable(v) else v for k, v in sd.items()}


def _as_half(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().half() if _halvable(v) else v for k, v in sd.items()}


def _as_float(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.dtype == torch.float16 else v for k, v in sd.items()}


def _read(path: Path):
    with path.open("rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":  # a compact (gzip) checkpoint
        with gzip.open(path, "rb") as f:
            return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    try:
        data = _read(path)
    except FileNotFoundError:
        raise UnknownModel(f"checkpoint {path} does not exist") from None
    except Exception as exc:  # unpickling errors of all kinds
        raise UnknownModel(f"{path} is not a readable layercast checkpoint: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UnknownModel(
            f"{path} is not a layercast checkpoint (format {data.get('format') if isinstance(data, dict) else None!r})"
        )
    task = data.get("task")
    if task and task.get("state_dict"):
        task = {**task, "state_dict": _as_float(task["state_dict"])}
    ckpt = Checkpoint(
        kind=data["kind"],
        config=CodecConfig.from_dict(data["config"]),
        state_dict=_as_float(data["state_dict"]),
        task=task,
        enhancement=data.get("enhancement"),
        temporal=data.get("temporal"),
        training=data.get("training") or {},
        metrics=data.get("metrics") or {},
        path=path,
    )
    if ckpt.model_id != data["model_id"]:
        raise UnknownModel(
            f"{path}: weights do not match the recorded model id {data['model_id']} (file corrupted?)"
        )
    return ckpt
