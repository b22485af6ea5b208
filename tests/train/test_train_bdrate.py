"""Bjøntegaard deltas against answers known independently of any implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from layercast.train.bdrate import BDError, bd_quality, bd_rate

RATES = np.array([0.12, 0.21, 0.40, 0.77, 1.30])
PSNRS = np.array([29.1, 31.4, 33.9, 36.2, 38.0])


@pytest.mark.parametrize("method", ["cubic", "pchip"])
def test_uniform_rate_scaling_is_exact(method: str) -> None:
    # B reaches every quality of A with exactly 90 % of the bits
    assert bd_rate(RATES, PSNRS, 0.9 * RATES, PSNRS, method=method) == pytest.approx(-10.0, abs=1e-9)
    assert bd_rate(RATES, PSNRS, 1.25 * RATES, PSNRS, method=method) == pytest.approx(25.0, abs=1e-9)
    assert bd_rate(RATES, PSNRS, RATES, PSNRS, method=method) == pytest.approx(0.0, abs=1e-12)


def test_log_rate_exactly_cubic_in_quality() -> None:
    # log r_A(q) = c(q) cubic; log r_B(q) = c(q) + 0.01 (q - 32)^2 on overlapping but different ranges.
    # The fits are exact, the overlap is [32, 38]: mean of 0.01 (q - 32)^2 there = 0.01 * 6^2 / 3 = 0.12,
    # so BD-rate = e^0.12 - 1 = +12.7497 %
    def c(q: np.ndarray) -> np.ndarray:
        return 0.001 * (q - 30) ** 3 - 0.01 * (q - 30) ** 2 + 0.3 * (q - 30) - 2.0

    qa, qb = np.linspace(30, 38, 5), np.linspace(32, 40, 6)
    rb = np.exp(c(qb) + 0.01 * (qb - 32) ** 2)
    assert bd_rate(np.exp(c(qa)), qa, rb, qb) == pytest.approx((math.exp(0.12) - 1) * 100, abs=1e-8)


def test_piecewise_linear_log_rate_with_pchip() -> None:
    # PCHIP reproduces a straight line; log r_B = log r_A - 0.05 (q - 30): mean over [30, 36] is -0.15
    q = np.array([30.0, 32.0, 34.0, 36.0])
    la = 0.4 * q - 14
    got = bd_rate(np.exp(la), q, np.exp(la - 0.05 * (q - 30)), q, method="pchip")
    assert got == pytest.approx((math.exp(-0.15) - 1) * 100, abs=1e-9)


def test_bd_quality_of_a_rate_scaling_on_a_log_linear_curve() -> None:
    # q = 40 + 3 ln r; with rates scaled by 0.9, B gains 3 ln(1/0.9) dB at equal rate
    r = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
    q = 40 + 3 * np.log(r)
    assert bd_quality(r, q, 0.9 * r, q) == pytest.approx(3 * math.log(1 / 0.9), abs=1e-9)
    assert bd_quality(r, q, r, q + 0.5, method="pchip") == pytest.approx(0.5, abs=1e-12)


def test_published_compare_codecs_example() -> None:
    # google/compare-codecs lib/visual_metrics_unittest.py: points (rate, quality) = (x, x) for x in
    # 10..40 vs (x, 2x): B needs half the rate -> about -50 % (their tolerance 0.5), and the
    # reverse about +100 % (tolerance 2)
    x = np.array([10.0, 20.0, 30.0, 40.0])
    assert bd_rate(x, x, x, 2 * x) == pytest.approx(-50.0, abs=0.5)
    assert bd_rate(x, 2 * x, x, x) == pytest.approx(100.0, abs=2.0)


@pytest.mark.parametrize("method", ["cubic", "pchip"])
def test_swapping_curves_inverts_the_ratio(method: str) -> None:
    rb = RATES * np.array([0.8, 0.85, 0.9, 0.97, 1.02])
    qb = PSNRS + np.array([0.1, -0.2, 0.3, 0.0, 0.2])
    ab = bd_rate(RATES, PSNRS, rb, qb, method=method) / 100
    ba = bd_rate(rb, qb, RATES, PSNRS, method=method) / 100
    assert (1 + ab) * (1 + ba) == pytest.approx(1.0, abs=1e-12)


def test_decreasing_quality_metric_works() -> None:
    # an error metric (lower is better, e.g. RMSE) falls with rate; B saves 20 % everywhere
    rmse = np.array([9.0, 7.0, 5.5, 4.8])
    assert bd_rate(RATES[:4], rmse, 0.8 * RATES[:4], rmse) == pytest.approx(-20.0, abs=1e-9)


def test_errors() -> None:
    with pytest.raises(BDError, match="at least 4"):
        bd_rate([1, 2, 3], [30, 31, 32], [1, 2, 3, 4], [30, 31, 32, 33])
    with pytest.raises(BDError, match="do not overlap"):
        bd_rate(RATES, PSNRS, RATES, PSNRS + 20)
    with pytest.raises(BDError, match="do not overlap"):
        bd_quality(RATES, PSNRS, RATES * 100, PSNRS)
    with pytest.raises(BDError, match="positive"):
        bd_rate([0, 1, 2, 3], [30, 31, 32, 33], [1, 2, 3, 4], [30, 31, 32, 33])
    with pytest.raises(BDError, match="4 rates but 5"):
        bd_rate([1, 2, 3, 4], [30, 31, 32, 33, 34], [1, 2, 3, 4], [30, 31, 32, 33])
    with pytest.raises(BDError, match="distinct"):
        bd_rate([1, 2, 3, 4], [30, 30, 32, 33], [1, 2, 3, 4], [30, 31, 32, 33], method="pchip")
    with pytest.raises(BDError, match="finite"):
        bd_rate([1, 2, 3, 4], [30, np.nan, 32, 33], [1, 2, 3, 4], [30, 31, 32, 33])
    with pytest.raises(BDError, match="unknown method"):
        bd_rate(RATES, PSNRS, RATES, PSNRS, method="akima")  # type: ignore[arg-type]
