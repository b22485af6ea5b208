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


def _encode_photo(tmp_path, name: str = "photo") -> tuple:
    image = smooth_image(np.random.default_rng(5), 64, 80)
    Image.fromarray(image).save(tmp_path / f"{name}.png")
    out = tmp_path / "out"
    assert (
        main(
            [
                "encode",
                str(tmp_path / f"{name}.png"),
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
    return image, out


def test_decode_a_glob_uses_each_enhancement_with_its_base(model_dir, tmp_path, capsys):
    _, out = _encode_photo(tmp_path)
    dec = tmp_path / "dec"
    capsys.readouterr()
    # what `layercast decode out/* -o dec/` passes: the base and its enhancement
    assert main(["decode", *map(str, sorted(out.iterdir())), "-o", str(dec), "--device", "cpu"]) == 0
    printed = capsys.readouterr()
    assert sorted(p.name for p in dec.iterdir()) == ["photo.full.png"]
    assert printed.out.count("→") == 1 and printed.err == ""
    expected = model_dir.reconstruct(
        model_dir.decode_base((out / "photo.lcb").read_bytes()), (out / "photo.lce").read_bytes()
    )
    assert np.array_equal(np.asarray(Image.open(dec / "photo.full.png")), expected)
    # a folder and the same base twice: decoded once
    assert (
        main(["decode", str(out), str(out / "photo.lcb"), "-o", str(tmp_path / "dec2"), "--device", "cpu"])
        == 0
    )
    assert capsys.readouterr().out.count("→") == 1


def test_decode_an_enhancement_alone_names_its_base(model_dir, tmp_path, capsys):
    _, out = _encode_photo(tmp_path)
    capsys.readouterr()
    assert main(["decode", str(out / "photo.lce"), "-o", str(tmp_path / "dec"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert f"{out / 'photo.lce'} is an enhancement layer" in err and str(out / "photo.lcb") in err
    assert "a enhancement" not in err


def test_missing_files_folders_and_grammar(model_dir, tmp_path, capsys):
    assert main(["decode", str(tmp_path / "nope.lcb"), "-o", str(tmp_path / "d")]) == 1
    assert "nope.lcb: no such file" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nope.lcb")]) == 1
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["encode", str(tmp_path / "empty"), "-o", str(tmp_path / "o"), "--model", "test-base"]) == 1
    assert "no PNG or JPEG image" in capsys.readouterr().err
    _, out = _encode_photo(tmp_path)
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    assert [r["layer"] for r in json.loads(capsys.readouterr().out)] == ["base", "enhancement"]
    from layercast.shared.codec import load_codec
    from layercast.shared.errors import UnknownModel

    with pytest.raises(UnknownModel, match="is an enhancement checkpoint"):
        load_codec("test-base-rec", device="cpu")


def test_stdin_and_stdout(model_dir, tmp_path, monkeypatch, capsysbinary):
    import io

    image, out = _encode_photo(tmp_path)
    capsysbinary.readouterr()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO((tmp_path / "photo.png").read_bytes())))
    assert (
        main(["encode", "-", "-o", "-", "--layers", "base", "--model", "test-base", "--device", "cpu"]) == 0
    )
    base = capsysbinary.readouterr().out
    assert base == (out / "photo.lcb").read_bytes()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(base)))
    assert main(["decode", "-", "-o", "-", "--preview", "--device", "cpu"]) == 0
    png = capsysbinary.readouterr().out
    preview = model_dir.preview(model_dir.decode_base(base))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), preview)
    assert main(["encode", "-", "-o", "-", "--model", "test-base"]) == 1  # both layers cannot share stdout
    assert b"--layers base" in capsysbinary.readouterr().err


def test_info_and_decode_a_folder_of_a_clip(model_dir, tmp_path, capsys):
    """A clip's base layers in name order: each predicted frame takes its size and model from the
    frame it names and decodes against it; one without its reference before it is an error."""
    from layercast.shared.codec.api import ScalableCodec
    from layercast.shared.codec.factory import temporal_checkpoint
    from layercast.shared.codec.temporal import TemporalLayer
    from layercast.shared.codec.video import VideoEncoder
    from layercast.shared.data.synth import SyntheticCamera

    base = model_dir
    layer = TemporalLayer.from_intra(base.base.latent_codec, base.config)
    tmp = temporal_checkpoint(layer, base.base_model_id)
    tmp.save(tmp_path / "models" / "test-base-temporal.pt")
    default_registry.cache_clear()
    codec = ScalableCodec(base.base_ckpt, base.enh_ckpt, tmp, device="cpu")
    enc = VideoEncoder(codec, intra_period=3)
    cam = SyntheticCamera(4, 80, 64, 10.0)
    clip = tmp_path / "clip"
    clip.mkdir()
    frames = [enc.encode(cam.frame(i).image) for i in range(5)]
    for i, f in enumerate(frames):
        (clip / f"{i:06d}.lcb").write_bytes(f.base)
        (clip / f"{i:06d}.lce").write_bytes(f.enhancement)
    capsys.readouterr()
    assert main(["info", str(clip), "--json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["layer"] != "enhancement"]
    assert [r["layer"] for r in rows] == ["base", "predicted", "predicted", "base", "predicted"]
    for r, f in zip(rows, frames, strict=True):
        assert (r["width"], r["height"], r["model_id"]) == (80, 64, base.base_model_id)
        assert r["total_bytes"] == len(f.base)
        assert r["header_bytes"] == (14 if r["layer"] == "predicted" else 28)
        assert r["bpp"] == round(8 * len(f.base) / (80 * 64), 5)

    dec = tmp_path / "dec"
    assert main(["decode", str(clip), "-o", str(dec), "--preview", "--device", "cpu"]) == 0
    for i, f in enumerate(frames):
        expected = codec.preview(f.decoded)
        assert np.array_equal(np.asarray(Image.open(dec / f"{i:06d}.preview.png")), expected)
    assert main(["decode", str(clip), "-o", str(dec), "--device", "cpu"]) == 0
    expected = codec.reconstruct(frames[4].decoded, frames[4].enhancement)
    assert np.array_equal(np.asarray(Image.open(dec / "000004.full.png")), expected)

    # a predicted frame alone: its header says nothing of its size; it cannot be decoded
    capsys.readouterr()
    assert main(["info", str(clip / "000002.lcb"), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["layer"], row["width"], row["bpp"], row["frame_ref"]) == (
        "predicted",
        None,
        None,
        f"{frames[1].decoded.frame_ref:08x}",
    )
    assert main(["decode", str(clip / "000002.lcb"), "-o", str(dec), "--preview", "--device", "cpu"]) == 1
    assert "not among the files before it" in capsys.readouterr().err
