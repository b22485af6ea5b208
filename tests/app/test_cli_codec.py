"""`layercast encode | info | decode | models` on real files, with checkpoints found through LAYERCAST_MODELS."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from layercast.cli import main
from layercast.shared.codec.registry import default_registry
from tests.conftest import make_untrained_codec, smooth_image


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    codec = make_untrained_codec()
    d = tmp_path / "models"
    codec.base_ckpt.save(d / "test-base.pt")
    codec.enh_ckpt.save(d / "test-base-rec.pt")
    monkeypatch.setenv("LAYERCAST_MODELS", str(d))
    default_registry.cache_clear()
    yield codec
    default_registry.cache_clear()


def test_encode_info_decode(model_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(smooth_image(rng, 75, 101)).save(src / "a.png")
    Image.fromarray(smooth_image(rng, 64, 64)).save(src / "b.jpg", quality=90)
    out = tmp_path / "out"
    assert (
        main(
            [
                "encode",
                str(src / "a.png"),
                str(src / "b.jpg"),
                "-o",
                str(out),
                "--model",
                "test-base",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (out / "a.lcb").exists() and (out / "a.lce").exists()

    capsys.readouterr()
    assert main(["info", str(out / "a.lcb"), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["width"], row["height"], row["layer"]) == (101, 75, "base")
    assert row["total_bytes"] == (out / "a.lcb").stat().st_size
    assert row["model_id"] == model_dir.base_model_id
    assert abs(row["bpp"] - 8 * row["total_bytes"] / (101 * 75)) < 1e-4

    assert (
        main(
            ["decode", str(out / "a.lcb"), str(out / "b.lcb"), "-o", str(out), "--preview", "--device", "cpu"]
        )
        == 0
    )
    assert main(["decode", str(out / "a.lcb"), "-o", str(out), "--device", "cpu"]) == 0
    full = np.asarray(Image.open(out / "a.full.png"))
    assert full.shape == (75, 101, 3)
    # the CLI's full decode equals an offline decode of the same bytes
    dec = model_dir.decode_base((out / "a.lcb").read_bytes())
    assert np.array_equal(full, model_dir.reconstruct(dec, (out / "a.lce").read_bytes()))

    capsys.readouterr()
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "test-base " in listing and model_dir.base_model_id in listing


def test_bad_inputs_give_clear_errors(model_dir, tmp_path, capsys):
    gray = tmp_path / "gray.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(gray)
    assert (
        main(["encode", str(gray), "-o", str(tmp_path / "o"), "--model", "test-base", "--device", "cpu"]) == 1
    )
    assert "grayscale" in capsys.readouterr().err

    junk = tmp_path / "junk.lcb"
    junk.write_bytes(b"not a bitstream at all")
    assert main(["info", str(junk)]) == 1
    assert "bad magic" in capsys.readouterr().err

    assert main(["encode", str(gray), "-o", str(tmp_path / "o"), "--model", "nope"]) == 1
    assert "no model named" in capsys.readouterr().err


def test_a_command_prints_no_third_party_warnings():
    """A fresh interpreter, as a user runs it: torch_geometric (imported by compressai) calls the
    deprecated torch.jit.script at import time; the command must not print torch's warning."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "layercast", "models"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "det-tiny" in done.stdout
    assert "Warning" not in done.stderr, done.stderr
