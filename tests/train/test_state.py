"""Resume files: saved and restored exactly, and never unpickled beyond tensors and plain values."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from layercast.train.state import UnsafeStateFile, load_state, save_state


class _Touch:
    """Unpickles into a call that creates ``marker``: what a malicious resume file would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: D105
        return (Path.touch, (self.marker,))


def _module() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def test_resume_file_round_trip_restores_weights_optimizer_and_rngs(tmp_path: Path) -> None:
    model = _module()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[5], gamma=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    np.random.seed(3)
    random.seed(4)
    path = tmp_path / "state.pt"
    save_state(path, 7, {"m": model}, {"opt": opt, "sched": sched}, {"config": {"lr": 1e-3, "out": "x"}})
    expected = (np.random.rand(3), random.random(), torch.rand(2))

    fresh = torch.nn.Linear(3, 2)
    opt2 = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    sched2 = torch.optim.lr_scheduler.MultiStepLR(opt2, milestones=[5], gamma=0.1)
    step, extra = load_state(path, {"m": fresh}, {"opt": opt2, "sched": sched2})

    assert step == 7 and extra == {"config": {"lr": 1e-3, "out": "x"}}
    assert torch.equal(fresh.weight, model.weight)
    assert sched2.state_dict()["last_epoch"] == 1
    np.testing.assert_array_equal(np.random.rand(3), expected[0])
    assert random.random() == expected[1]
    assert torch.equal(torch.rand(2), expected[2])


def test_a_pickled_object_in_a_resume_file_is_refused_not_run(tmp_path: Path) -> None:
    model = _module()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "state.pt"
    marker = tmp_path / "pwned"
    save_state(path, 1, {"m": model}, {"opt": opt}, {"payload": _Touch(marker)})

    with pytest.raises(UnsafeStateFile, match="weights_only=True"):
        load_state(path, {"m": _module()}, {"opt": torch.optim.SGD(model.parameters(), lr=0.1)})
    assert not marker.exists()
