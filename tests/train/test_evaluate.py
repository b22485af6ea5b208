"""`layercast eval` end to end on a tiny synthetic split with the shipped models: rates are the real
bytes of the files (recomputed here from the baseline encoder and the codec's own bitstreams),
files made for one task are reused by the next with identical figures, and plots are written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from layercast.shared.codec import load_codec
from layercast.shared.data.writers import generate
from layercast.train import data as tdata
from layercast.train.baselines import available_codecs, default_qualities, encode
from layercast.train.evaluate import _uint8, evaluate_baselines, load_task_reference, run_eval

ZOO_TASKS = Path(__file__).resolve().parents[2] / "shared" / "zoo" / "tasks"
N_VAL = 3


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth-eval")
    generate(root, n_train=1, n_val=N_VAL, width=128, height=96, seed=5, progress=False)
    return root


def _images(task: str, root: Path) -> list:
    ds = tdata.make_dataset(task, root, "val")
    return [_uint8(ds[i][0]) for i in range(len(ds))]


def test_eval_reports_real_bytes_for_models_and_baselines(split, tmp_path):
    torch.set_num_threads(1)
    refs = {"detection": ZOO_TASKS / "detection.pt", "depth": ZOO_TASKS / "depth.pt"}
    summary = run_eval(["det-tiny", "depth-tiny"], split, tmp_path, refs, limit=None, baselines=True)

    for task, model in (("detection", "det-tiny"), ("depth", "depth-tiny")):
        images = _images(task, split)
        pixels = sum(i.shape[0] * i.shape[1] for i in images)
        points = summary["tasks"][task]["points"]
        (ours,) = [p for p in points if p["method"] == model]
        codec = load_codec(model, device="cpu")
        frames = [codec.encode(i) for i in images]
        assert ours["bpp"] == pytest.approx(8 * sum(len(f.base) for f in frames) / pixels, rel=1e-12)
        assert ours["total_bpp"] == pytest.approx(
            8 * sum(len(f.base) + len(f.enhancement) for f in frames) / pixels, rel=1e-12
        )
        for name in available_codecs():
            curve = [p for p in points if p["method"] == name]
            assert [p["extra"]["quality"] for p in curve] == list(default_qualities(name))
            for p in curve:
                nbytes = sum(len(encode(i, name, p["extra"]["quality"])) for i in images)
                assert p["bpp"] == pytest.approx(8 * nbytes / pixels, rel=1e-12), (task, name, p)
            assert curve[0]["bpp"] < curve[-1]["bpp"]
        assert (tmp_path / f"rd_{task}.png").stat().st_size > 10_000
        assert json.loads((tmp_path / f"rd_{task}.json").read_text()) == points
        assert set(summary["tasks"][task]["bytes_ratio_at_equal_accuracy"]) == {
            f"{model} vs {c}" for c in ("jpeg", "webp", "avif")
        }


def test_baseline_files_made_for_one_task_serve_the_next_with_the_same_figures(split):
    torch.set_num_threads(1)
    model = load_task_reference(ZOO_TASKS / "depth.pt")
    fresh = evaluate_baselines(model, "depth", split, codecs=["jpeg", "webp"], workers=1)
    files: dict = {}
    evaluate_baselines(
        load_task_reference(ZOO_TASKS / "detection.pt"),
        "detection",
        split,
        codecs=["jpeg", "webp"],
        files=files,
    )
    assert len(files) == N_VAL * (len(default_qualities("jpeg")) + len(default_qualities("webp")))
    made = dict(files)
    reused = evaluate_baselines(model, "depth", split, codecs=["jpeg", "webp"], files=files, workers=2)
    assert files == made  # the same scenes: nothing encoded again
    assert [(p.method, p.bpp, p.accuracy) for p in reused] == [(p.method, p.bpp, p.accuracy) for p in fresh]


def _stored(path: Path, task: str, images: int) -> Path:
    name = "mAP" if task == "detection" else "disparity_rmse"
    pts = [
        {
            "method": "det-old",
            "task": task,
            "bpp": 0.1,
            "accuracy": 0.3,
            "accuracy_name": name,
            "extra": {"images": images},
        },
        {
            "method": "uncompressed",
            "task": task,
            "bpp": 24.0,
            "accuracy": 0.9,
            "accuracy_name": name,
            "extra": {},
        },
    ] + [
        {
            "method": "jpeg",
            "task": task,
            "bpp": b,
            "accuracy": a,
            "accuracy_name": name,
            "extra": {"quality": q},
        }
        for q, b, a in ((1, 0.2, 0.0), (50, 2.0, 0.8))
    ]
    path.write_text(json.dumps(pts))
    return path


def test_stored_curves_stand_in_for_evaluating_the_baselines_again(split, tmp_path, monkeypatch):
    import layercast.train.evaluate as ev

    torch.set_num_threads(1)
    stored = _stored(tmp_path / "rd_detection.json", "detection", N_VAL)

    def _refuse(*a, **k):
        raise AssertionError("baselines evaluated although stored curves were given")

    monkeypatch.setattr(ev, "evaluate_baselines", _refuse)
    monkeypatch.setattr(ev, "evaluate_reference", _refuse)
    summary = run_eval(["det-tiny"], split, tmp_path / "out", {}, None, True, stored=[stored])

    points = summary["tasks"]["detection"]["points"]
    assert [p["method"] for p in points] == ["det-tiny", "uncompressed", "jpeg", "jpeg"]
    assert points[1:] == [
        ev.asdict(ev.RDPoint(**p)) for p in json.loads(stored.read_text())[1:]
    ]  # copied as they were; the old model's own point is not
    ours = ev.RDPoint(**points[0])
    frames = [load_codec("det-tiny", device="cpu").encode(i) for i in _images("detection", split)]
    assert ours.bpp == pytest.approx(8 * sum(len(f.base) for f in frames) / (N_VAL * 128 * 96), rel=1e-12)
    # the ratio against the stored JPEG curve: log-linear between (0.2, 0.0) and (2.0, 0.8)
    need = math.exp(math.log(0.2) + ours.accuracy / 0.8 * math.log(10))
    assert summary["tasks"]["detection"]["bytes_ratio_at_equal_accuracy"][
        "det-tiny vs jpeg"
    ] == pytest.approx(need / ours.bpp)
    assert (tmp_path / "out" / "rd_detection.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("task", "images", "refs", "message"),
    [
        ("detection", 300, {}, "300"),  # curves of another test split's size
        ("depth", N_VAL, {}, "no curves of the tasks"),  # nothing evaluated for depth here
        ("detection", N_VAL, {"detection": ZOO_TASKS / "detection.pt"}, "not both"),
    ],
)
def test_stored_curves_that_do_not_fit_are_refused(split, tmp_path, task, images, refs, message):
    from layercast.shared.errors import ConfigError

    stored = _stored(tmp_path / f"rd_{task}.json", task, images)
    with pytest.raises(ConfigError, match=message):
        run_eval(["det-tiny"], split, tmp_path / "out", refs, None, True, stored=[stored])
