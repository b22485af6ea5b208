"""``layercast data synth`` / ``preview`` end to end."""

from __future__ import annotations

import json

from PIL import Image

from layercast.cli import main
from layercast.shared.data.coco import CocoDetection


def test_synth_cli_writes_a_readable_split(tmp_path, capsys):
    out = tmp_path / "bench"
    args = [
        "data",
        "synth",
        "--out",
        str(out),
        "--train",
        "3",
        "--val",
        "2",
        "--size",
        "128x96",
        "--seed",
        "5",
    ]
    assert main([*args, "--no-progress", "--json"]) == 0
    text = capsys.readouterr().out
    assert str(out / "coco") in text and str(out / "cityscapes") in text
    summary = json.loads(text.strip().splitlines()[-1])
    assert [s["images"] for s in summary["splits"]] == [3, 2]
    ds = CocoDetection(out / "coco", "train")
    image, _ = ds[0]
    assert image.shape == (3, 96, 128)
    again = tmp_path / "again"
    assert main(["data", "synth", "--out", str(again), *args[4:], "--no-progress"]) == 0
    for rel in ("coco/annotations/instances_val2017.json", "coco/train2017/000000000002.png"):
        assert (out / rel).read_bytes() == (again / rel).read_bytes()


def test_synth_cli_jpeg(tmp_path):
    out = tmp_path / "jpg"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(out),
                "--train",
                "1",
                "--val",
                "1",
                "--image-format",
                "jpg",
                "--no-progress",
            ]
        )
        == 0
    )
    jpgs = list((out / "coco" / "val2017").glob("*.jpg"))
    assert len(jpgs) == 1 and Image.open(jpgs[0]).format == "JPEG"
    assert len(CocoDetection(out / "coco", "val")) == 1


def test_bad_size_is_a_clean_error(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--size", "big"]) == 1
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


def test_preview_cli(tmp_path):
    png = tmp_path / "p.png"
    assert main(["data", "preview", "--out", str(png), "--count", "2", "--size", "128x96"]) == 0
    assert Image.open(png).size[0] > 300
