"""Figures of a soak or ramp run: one row per interval (or ramp step), the tables printed, and the
CSV / JSON files written with ``--out``."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile; NaN for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else math.nan


@dataclass
class ProcFigures:
    """One process at one moment (see :mod:`layercast.bench.procstat`)."""

    rss_mib: float
    rss_growth_pct: float  # vs the first interval (the warm-up)
    fds: int
    cpu_pct: float  # % of one core over the interval


@dataclass
class IntervalRow:
    """The state of a soak run at the end of one reporting interval (totals are cumulative)."""

    t_s: float  # seconds since capture started
    cameras: int
    captured: int  # frames appended to the outboxes (each got a sequence number)
    sent: int  # frames written to a stream (resends included)
    acked: int  # frames the cloud acknowledged (durably stored)
    results: int  # distinct frames answered at the subscriber
    results_per_s: float  # in this interval
    lost: int  # by id: captured frames that will get no result (see lost_by_reason)
    outstanding: int  # captured, no result yet, newer than the camera's last result
    oldest_outstanding_s: float  # age of the oldest of those (0 when none)
    p50_ms: float  # capture -> result received, over the results of this interval
    p99_ms: float
    latency_samples: int
    cloud: ProcFigures
    load: ProcFigures
    load_average: float
    lost_by_reason: dict[str, int] = field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        """One level of keys (for CSV)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("cloud", "load", "lost_by_reason")}
        for who in ("cloud", "load"):
            out.update({f"{who}_{k}": v for k, v in asdict(getattr(self, who)).items()})
        out["lost_by_reason"] = json.dumps(self.lost_by_reason, sort_keys=True)
        return out


INTERVAL_HEAD = (
    f"{'time':>6} {'cams':>4} {'captured':>8} {'sent':>8} {'acked':>8} {'results':>8} {'res/s':>6} "
    f"{'lost':>5} {'backlog':>7} {'oldest s':>8} {'p50 ms':>8} {'p99 ms':>8} | "
    f"{'cloud MiB':>9} {'grow %':>6} {'fds':>4} {'cpu %':>5} | {'load MiB':>8} {'grow %':>6} {'fds':>4} {'cpu %':>5} "
    f"{'ldavg':>5}"
)


def format_interval(r: IntervalRow) -> str:
    minutes, seconds = divmod(int(round(r.t_s)), 60)
    return (
        f"{minutes:>3}:{seconds:02d} {r.cameras:>4} {r.captured:>8} {r.sent:>8} {r.acked:>8} {r.results:>8} "
        f"{r.results_per_s:>6.1f} {r.lost:>5} {r.outstanding:>7} {r.oldest_outstanding_s:>8.1f} "
        f"{r.p50_ms:>8.1f} {r.p99_ms:>8.1f} | {r.cloud.rss_mib:>9.1f} {r.cloud.rss_growth_pct:>+6.1f} "
        f"{r.cloud.fds:>4} {r.cloud.cpu_pct:>5.0f} | {r.load.rss_mib:>8.1f} {r.load.rss_growth_pct:>+6.1f} "
        f"{r.load.fds:>4} {r.load.cpu_pct:>5.0f} {r.load_average:>5.1f}"
    )


@dataclass
class StepRow:
    """One ramp step: ``cameras`` at the fixed frame rate for a short measured window."""

    cameras: int
    offered_fps: float
    results_fps: float  # results received per second in the measured window
    p50_ms: float  # over results received in the window and frames still unanswered at its end
    p99_ms: float
    oldest_outstanding_s: float  # at the end of the window
    outstanding: int
    lost: int  # refused / dropped / skipped during the step (abandoned backlog not counted)
    held: bool
    cloud_rss_mib: float
    cloud_fds: int
    cloud_cpu_pct: float
    load_cpu_pct: float
    load_average: float
    why: str = ""  # why it did not hold


STEP_HEAD = (
    f"{'cameras':>7} {'offered fps':>11} {'results fps':>11} {'p50 ms':>8} {'p99 ms':>8} {'oldest s':>8} "
    f"{'backlog':>7} {'lost':>4} {'cloud MiB':>9} {'fds':>4} {'cloud cpu %':>11} {'load cpu %':>10} {'ldavg':>5} {'held':>5}"
)


def format_step(r: StepRow) -> str:
    line = (
        f"{r.cameras:>7} {r.offered_fps:>11.1f} {r.results_fps:>11.1f} {r.p50_ms:>8.1f} {r.p99_ms:>8.1f} "
        f"{r.oldest_outstanding_s:>8.1f} {r.outstanding:>7} {r.lost:>4} {r.cloud_rss_mib:>9.1f} "
        f"{r.cloud_fds:>4} {r.cloud_cpu_pct:>11.0f} {r.load_cpu_pct:>10.0f} {r.load_average:>5.1f} "
        f"{'yes' if r.held else 'no':>5}"
    )
    return line + (f"  ({r.why})" if r.why else "")


def write_rows(
    out_dir: Path, name: str, rows: Sequence[IntervalRow] | Sequence[StepRow], meta: dict[str, Any]
) -> None:
    """``name.csv`` (one line per row) and ``name.json`` (rows plus run description and summary)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    flat = [r.flat() if isinstance(r, IntervalRow) else asdict(r) for r in rows]
    if flat:
        with open(out_dir / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(flat[0]))
            writer.writeheader()
            writer.writerows(flat)
    doc = {**meta, "rows": [asdict(r) for r in rows]}
    (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON: {type(o).__name__}")


def summary_table(pairs: Sequence[tuple[str, str]]) -> str:
    """Two columns, the figure's name padded."""
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in pairs)
