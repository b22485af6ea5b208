"""Local state-dict loading: prefixes, drops, strictness."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from layercast.shared.errors import ConfigError
from layercast.shared.tasks.weights import load_into, load_weights_file, read_state_dict


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))


def test_strips_ddp_and_wrapper_prefixes_and_reads_checkpoints(tmp_path: Path) -> None:
    src = _net()
    state = {f"module.model.{k}": v for k, v in src.state_dict().items()}
    torch.save({"state_dict": state, "step": torch.tensor(3)}, tmp_path / "ckpt.pt")
    dst = _net()
    report = load_weights_file(dst, tmp_path / "ckpt.pt")
    assert report.loaded == sorted(src.state_dict()) and not report.missing
    for a, b in zip(src.parameters(), dst.parameters(), strict=True):
        assert torch.equal(a, b)


def test_drop_prefixes_and_non_strict_report() -> None:
    src = _net()
    state = dict(src.state_dict())
    state["aux.weight"] = torch.zeros(1)
    state["1.weight"] = torch.zeros(5, 4)  # wrong shape
    dst = _net()
    with pytest.raises(ConfigError):
        load_into(dst, state)
    report = load_into(dst, state, strict=False)
    assert report.unexpected == ["aux.weight"]
    assert report.missing == ["1.weight"] and len(report.shape_mismatch) == 1
    assert torch.equal(dst[0].weight, src[0].weight)
    load_into(dst, {k: v for k, v in state.items() if k != "1.weight"}, drop_prefixes=("aux.",), strict=False)


def test_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="cannot be read"):
        read_state_dict(bad)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ConfigError, match="state dict"):
        read_state_dict(tmp_path / "list.pt")
