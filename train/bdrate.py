"""Bjøntegaard delta rate and delta quality between two rate-quality curves.

Classic method (G. Bjøntegaard, "Calculation of average PSNR differences
between RD-curves", VCEG-M33, 2001): fit ``log(rate)`` as a cubic polynomial
of quality for each curve (least squares; exact through 4 points), integrate
both over the quality interval the curves share, and turn the mean log-rate
difference into a percentage::

    ΔR = exp( (∫ log r_B(q) − log r_A(q) dq) / (q_hi − q_lo) ) − 1        (× 100 %)

Negative = curve B needs fewer bits than A for the same quality. ``bd_quality``
is the dual: quality as a cubic of log-rate, mean quality difference B − A over
the shared log-rate interval (positive = B better when higher is better; for
error metrics such as RMSE, negative = B better).

``method="pchip"`` replaces the cubic fit by piecewise cubic Hermite
interpolation (scipy's PCHIP), the variant the JCT-VC common-test-conditions
sheet adopted because a global cubic can oscillate. Quality may increase or
decrease with rate (PSNR, mAP, RMSE all work).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.polynomial import Polynomial
from scipy.interpolate import PchipInterpolator

Method = Literal["cubic", "pchip"]


class BDError(ValueError):
    """Curves that cannot be compared (too few points, no overlap, bad values)."""


def _curve(rate: object, quality: object, name: str, method: Method) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rate, dtype=np.float64).reshape(-1)
    q = np.asarray(quality, dtype=np.float64).reshape(-1)
    if r.shape != q.shape:
        raise BDError(f"curve {name}: {r.size} rates but {q.size} quality values")
    if r.size < 4:
        raise BDError(f"curve {name}: BD metrics need at least 4 points, got {r.size}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q))):
        raise BDError(f"curve {name}: rates and qualities must be finite")
    if np.any(r <= 0):
        raise BDError(f"curve {name}: rates must be positive, got {r.tolist()}")
    if method not in ("cubic", "pchip"):
        raise BDError(f"unknown method {method!r} (expected 'cubic' or 'pchip')")
    return np.log(r), q


def _mean_over(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: Method, what: str) -> float:
    """Mean of the fitted y(x) over [lo, hi]."""
    if method == "cubic":
        if np.unique(x).size < 4:
            raise BDError(f"{what}: a cubic fit needs at least 4 distinct values")
        poly = Polynomial.fit(x, y, 3)
        integral = poly.integ()
        return float((integral(hi) - integral(lo)) / (hi - lo))
    order = np.argsort(x)
    xs, ys = x[order], y[order]
    if np.any(np.diff(xs) == 0):
        raise BDError(f"{what}: piecewise interpolation needs distinct values, got repeats")
    return float(PchipInterpolator(xs, ys).integrate(lo, hi) / (hi - lo))


def _overlap(a: np.ndarray, b: np.ndarray, what: str) -> tuple[float, float]:
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    if not hi > lo:
        raise BDError(
            f"the curves do not overlap in {what}: A spans [{a.min():.6g}, {a.max():.6g}], "
            f"B spans [{b.min():.6g}, {b.max():.6g}]"
        )
    return float(lo), float(hi)


def bd_rate(
    rate_a: object, qual_a: object, rate_b: object, qual_b: object, *, method: Method = "cubic"
) -> float:
    """Average rate difference of B relative to A at equal quality, in percent (negative = B saves)."""
    la, qa = _curve(rate_a, qual_a, "A", method)
    lb, qb = _curve(rate_b, qual_b, "B", method)
    lo, hi = _overlap(qa, qb, "quality")
    diff = _mean_over(qb, lb, lo, hi, method, "curve B") - _mean_over(qa, la, lo, hi, method, "curve A")
    return float((np.exp(diff) - 1.0) * 100.0)


def bd_quality(
    rate_a: object, qual_a: object, rate_b: object, qual_b: object, *, method: Method = "cubic"
) -> float:
    """Average quality difference B − A at equal rate, in the quality's units (BD-PSNR for PSNR)."""
    la, qa = _curve(rate_a, qual_a, "A", method)
    lb, qb = _curve(rate_b, qual_b, "B", method)
    lo, hi = _overlap(la, lb, "log-rate")
    return _mean_over(lb, qb, lo, hi, method, "curve B") - _mean_over(la, qa, lo, hi, method, "curve A")
