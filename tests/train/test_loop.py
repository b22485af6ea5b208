"""The trainer end to end on a tiny synthetic split: task pre-training, base, enhancement,
resume from state.pt, exported checkpoints that the codec loads, and DDP on gloo."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from layercast.shared.codec.api import ScalableCodec
from layercast.shared.codec.bitstream import payload
from layercast.shared.codec.checkpoint import load_checkpoint
from layercast.shared.data.writers import generate
from layercast.train.loop import TrainConfig, train


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(root, n_train=6, n_val=2, width=128, height=64, seed=3, progress=False)
    return root


def _cfg(kind: str, data: Path, out: Path, **kw) -> TrainConfig:
    return TrainConfig(
        kind=kind, data=data, out=out, batch_size=2, workers=0, log_every=1, ckpt_every=1, device="cpu", **kw
    )


def test_base_resume_and_export(tiny_data, tmp_path):
    out = tmp_path / "base"
    train(_cfg("base", tiny_data, out, task="detection", lmbda=1.0, beta=0.01, steps=2))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["step"] for r in rows] == ["1", "2"]
    # resume: a second run with more steps continues at step 3, not from scratch
    path = train(_cfg("base", tiny_data, out, task="detection", lmbda=1.0, beta=0.01, steps=3))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert all(np.isfinite(float(r["bpp"])) for r in rows)

    ckpt = load_checkpoint(path)
    assert ckpt.kind == "base" and ckpt.task["kind"] == "detection"
    assert ckpt.training["beta"] == 0.01
    assert ckpt.task["class_names"][0] == "__background__"

    enh_out = tmp_path / "enh"
    enh_path = train(_cfg("enhancement", tiny_data, enh_out, base=path, lmbda=0.01, steps=2))
    enh = load_checkpoint(enh_path)
    assert enh.enhancement["base_model_id"] == ckpt.model_id

    codec = ScalableCodec(ckpt, enh, device="cpu")
    img = (np.random.default_rng(0).uniform(0, 255, (64, 128, 3))).astype(np.uint8)
    frame = codec.encode(img)
    dec = codec.decode_base(frame.base)
    [result] = codec.infer([dec])
    assert result.boxes.shape[1] == 4
    assert codec.reconstruct(dec, frame.enhancement).shape == img.shape


def test_task_pretraining_feeds_base(tiny_data, tmp_path):
    task_pt = train(_cfg("task", tiny_data, tmp_path / "task", task="depth", steps=2))
    assert task_pt.name == "task.pt"
    path = train(
        _cfg("base", tiny_data, tmp_path / "base", task="depth", lmbda=1.0, steps=1, task_init=task_pt)
    )
    assert load_checkpoint(path).task["name"] == "small_depth"


def test_base_warm_start_from_checkpoint(tiny_data, tmp_path):
    """--init continues from a finished base: its codec and task weights, not fresh ones;
    a checkpoint of another task or kind is refused with a clear message."""
    import torch

    from layercast.shared.errors import ConfigError

    first = load_checkpoint(
        train(
            _cfg("base", tiny_data, tmp_path / "a", task="detection", lmbda=1.0, beta=0.01, steps=2, seed=1)
        )
    )
    # lr 0: one step leaves the main weights where --init put them (a fresh build with seed 0 differs)
    cont = load_checkpoint(
        train(
            _cfg(
                "base",
                tiny_data,
                tmp_path / "b",
                task="detection",
                lmbda=1.0,
                beta=0.01,
                steps=1,
                lr=0.0,
                init=first.path,
            )
        )
    )
    for prefix in ("g_a.", "g_s_task.", "g_simple."):
        weights = [k for k in first.state_dict if k.startswith(prefix) and k.endswith("weight")]
        assert weights
        for k in weights:
            assert torch.equal(cont.state_dict[k], first.state_dict[k]), k
    for k, v in first.task["state_dict"].items():
        if v.is_floating_point() and "running_" not in k:  # batch-norm statistics move in train mode
            assert torch.equal(cont.task["state_dict"][k], v), k
    assert cont.training["init"] == str(first.path)

    depth = train(_cfg("base", tiny_data, tmp_path / "d", task="depth", lmbda=1.0, steps=1))
    with pytest.raises(ConfigError, match="not a detection base"):
        train(_cfg("base", tiny_data, tmp_path / "e", task="detection", lmbda=1.0, steps=1, init=depth))
    enh = train(_cfg("enhancement", tiny_data, tmp_path / "f", base=first.path, lmbda=0.01, steps=1))
    with pytest.raises(ConfigError, match="enhancement model"):
        train(_cfg("base", tiny_data, tmp_path / "g", task="detection", lmbda=1.0, steps=1, init=enh))


def test_freeze_codec_trains_only_the_task_model(tiny_data, tmp_path):
    """--freeze-codec: the task model of a finished base learns on the codec's rounded output;
    every codec tensor stays as it was, so the bitstream a camera sends is byte for byte the same."""
    import torch

    from layercast.shared.errors import ConfigError
    from layercast.train.systems import BaseSystem

    first = load_checkpoint(
        train(_cfg("base", tiny_data, tmp_path / "a", task="detection", lmbda=1.0, beta=0.01, steps=2))
    )
    tuned = load_checkpoint(
        train(
            _cfg(
                "base",
                tiny_data,
                tmp_path / "b",
                task="detection",
                lmbda=1.0,
                beta=0.01,
                steps=2,
                lr=1e-2,
                init=first.path,
                freeze_codec=True,
            )
        )
    )
    assert first.state_dict.keys() == tuned.state_dict.keys()
    for k, v in first.state_dict.items():
        assert torch.equal(tuned.state_dict[k], v), k
    moved = [
        k for k, v in first.task["state_dict"].items() if not torch.equal(tuned.task["state_dict"][k], v)
    ]
    assert any(k.endswith("weight") for k in moved)
    assert tuned.model_id != first.model_id and tuned.training["freeze_codec"] is True

    img = (np.random.default_rng(1).uniform(0, 255, (64, 128, 3))).astype(np.uint8)
    a, b = ScalableCodec(first, device="cpu"), ScalableCodec(tuned, device="cpu")
    assert payload(a.encode(img).base) == payload(b.encode(img).base)  # the header names the model

    system = BaseSystem(a.base, a.task_model, lmbda=1.0, beta=0.0, freeze_codec=True).train()
    assert not system.base.training and system.task_model.training
    with pytest.raises(ConfigError, match="needs --init"):
        train(
            _cfg("base", tiny_data, tmp_path / "c", task="detection", lmbda=1.0, steps=1, freeze_codec=True)
        )


def test_segmentation_enhancement_standalone(tiny_data, tmp_path):
    base = train(_cfg("base", tiny_data, tmp_path / "b", task="depth", lmbda=1.0, steps=1))
    path = train(
        _cfg(
            "enhancement",
            tiny_data,
            tmp_path / "e",
            base=base,
            target="segmentation",
            standalone=True,
            lmbda=1.0,
            steps=1,
        )
    )
    ckpt = load_checkpoint(path)
    assert ckpt.enhancement == {
        "target": "segmentation",
        "standalone": True,
        "base_model_id": load_checkpoint(base).model_id,
    }


def test_ddp_two_cpu_processes_gloo(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "layercast",
        "train",
        "base",
        "--task",
        "detection",
        "--lmbda",
        "1",
        "--data",
        str(tiny_data),
        "--out",
        str(out),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.pt").exists()
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) >= 1  # only rank 0 writes
