"""The report sets every base point against JPEG/WebP/AVIF at equal task accuracy, from a
`layercast eval` file of the same test images."""

from __future__ import annotations

import json
import math

import pytest

from layercast.shared.errors import ConfigError
from layercast.train.report import baseline_ratios, load_baselines, markdown, plot


def _point(method, bpp, acc, name="mAP", **extra):
    return {
        "method": method,
        "task": "detection",
        "bpp": bpp,
        "accuracy": acc,
        "accuracy_name": name,
        "extra": extra,
    }


def _results(name="mAP", points=((0.02, 0.1), (0.03, 0.15), (0.05, 0.5))):
    return {
        "bases": {
            "0.01": [_point(f"b{i}", r, a, name, lmbda=float(i + 1)) for i, (r, a) in enumerate(points)]
        }
    }


def test_ratio_is_the_codecs_bytes_at_the_same_accuracy_over_the_base_layers():
    jpeg = [_point("jpeg", 0.2, 0.1, quality=5), _point("jpeg", 0.4, 0.2, quality=10)]
    avif = [_point("avif", 0.1, 0.05, quality=5), _point("avif", 0.12, 0.12, quality=10)]
    rows = baseline_ratios(_results(), jpeg + avif)
    assert [r["lmbda"] for r in rows] == [1.0, 2.0, 3.0]
    # 0.1 mAP: exactly JPEG's first point, 0.2 bpp = 10x the base's 0.02
    assert rows[0]["jpeg"] == pytest.approx(10.0)
    # 0.15 mAP: half way between JPEG's points in log-rate: sqrt(0.2 * 0.4) / 0.03
    assert rows[1]["jpeg"] == pytest.approx(math.sqrt(0.08) / 0.03)
    assert rows[0]["avif"] == pytest.approx(math.exp(math.log(0.1) + 5 / 7 * math.log(1.2)) / 0.02)
    assert rows[2]["jpeg"] is None and rows[2]["avif"] is None  # 0.5 mAP: no codec reaches it
    assert all(r["webp"] is None for r in rows)  # no WebP sweep in the file
    md = markdown("detection", "reconstruction", {"baseline_ratios": rows})
    assert "| 0.01 | 1 | 0.0200 | 0.1000 | 10.00× | out of its range |" in md


def test_lower_is_better_accuracy_is_interpolated_the_other_way():
    jpeg = [_point("jpeg", 0.2, 5.0, "disparity_rmse"), _point("jpeg", 0.8, 4.0, "disparity_rmse")]
    rows = baseline_ratios(_results("disparity_rmse", [(0.05, 4.5)]), jpeg)
    assert rows[0]["jpeg"] == pytest.approx(0.4 / 0.05)


def test_the_bytes_a_codec_needs_are_where_its_curve_first_reaches_the_accuracy():
    """JPEG's depth curve dips at its low end (q=1 1.874 px, q=5 2.016, q=10 1.779, q=20 1.444):
    a base at 1.985 px is already beaten by JPEG's smallest file, so JPEG needs fewer bytes than
    its sweep holds (no ratio), not the bytes where the dip from q=1 to q=5 passes 1.985 px."""
    from layercast.train.evaluate import RDPoint, bytes_at_equal_accuracy

    sweep = ((0.1347, 1.874), (0.1895, 2.016), (0.2919, 1.779), (0.4519, 1.444))
    jpeg = [RDPoint("jpeg", "depth", r, a, "disparity_rmse") for r, a in sweep]
    base = lambda rmse: RDPoint("b", "depth", 0.03, rmse, "disparity_rmse")  # noqa: E731
    assert bytes_at_equal_accuracy(base(1.985), jpeg) is None
    t = (1.779 - 1.757) / (1.779 - 1.444)  # first reached between q=10 and q=20
    assert bytes_at_equal_accuracy(base(1.757), jpeg) == pytest.approx(0.2919 * (0.4519 / 0.2919) ** t)
    assert bytes_at_equal_accuracy(base(1.874), jpeg) == pytest.approx(0.1347)  # the smallest file
    assert bytes_at_equal_accuracy(base(1.2), jpeg) is None  # never reached
    # higher-is-better accuracy, the same rule: a dip is no crossing
    maps = [RDPoint("jpeg", "detection", r, a, "mAP") for r, a in ((0.1, 0.3), (0.2, 0.2), (0.4, 0.5))]
    assert bytes_at_equal_accuracy(RDPoint("b", "detection", 0.01, 0.25, "mAP"), maps) is None
    assert bytes_at_equal_accuracy(RDPoint("b", "detection", 0.01, 0.35, "mAP"), maps) == pytest.approx(
        0.2 * 2 ** (0.15 / 0.3)
    )


def test_a_baseline_file_from_other_test_images_is_refused(tmp_path):
    f = tmp_path / "rd_detection.json"
    f.write_text(
        json.dumps([_point("det-tiny", 0.09, 0.06, images=300), _point("jpeg", 0.2, 0.05, quality=5)])
    )
    assert [p["method"] for p in load_baselines(f, 300)] == ["jpeg"]
    with pytest.raises(ConfigError, match="300"):
        load_baselines(f, 100)


def test_bd_rate_of_a_curve_whose_quality_falls_with_rate_is_undefined_not_a_number():
    from layercast.train.report import _bd

    good = [(0.1, 20.0), (0.2, 22.0), (0.3, 23.0), (0.4, 24.0)]
    shifted = [(r * 0.9, q) for r, q in good]
    value, why = _bd(good, shifted)
    assert why is None and value == pytest.approx(-10.0)
    scattered = [(0.1, 20.0), (0.2, 22.0), (0.3, 21.5), (0.4, 24.0)]
    value, why = _bd(good, scattered)
    assert value is None and "curve B" in why and "0.3000 bpp: 21.5" in why
    rmse = [(0.1, 5.0), (0.2, 4.0), (0.3, 3.5), (0.4, 3.0)]  # lower is better
    assert _bd(rmse, [(r * 0.9, q) for r, q in rmse], higher_better=False)[1] is None
    assert _bd(rmse, rmse[::-1], higher_better=True)[1] is not None


def test_an_experiment_of_bases_alone_is_plotted_without_an_empty_enhancement_panel(tmp_path):
    from PIL import Image

    results = _results()
    for p in results["bases"]["0.01"]:
        p["preview_psnr"] = 20.0 + p["bpp"]
    curves = {"b0-conditional": [], "b0.01-conditional": []}
    plot(results, {"curves": curves}, tmp_path / "bases.png", "detection", "reconstruction")
    curves["b0.01-conditional"] = [(0.1, 25.0), (0.2, 26.0)]
    plot(results, {"curves": curves}, tmp_path / "both.png", "detection", "reconstruction")
    # two panels, 5 inches each at 120 dpi; three with the enhancement curves
    assert Image.open(tmp_path / "bases.png").size[0] == 1200
    assert Image.open(tmp_path / "both.png").size[0] == 1800
