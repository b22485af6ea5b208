"""`layercast bench soak`: many cameras against one cloud process for minutes, and a ramp that finds
how many cameras one cloud process holds.

What runs
    A real ``layercast cloud`` process (one torch thread, shipped configuration, plain text on
    loopback) and this process as the load: N cameras (:mod:`layercast.bench.fleet`) that replay
    real base bitstreams, encoded once per camera with the shipped codec, with fresh sequence
    numbers through the edge's own outbox and EdgeLink (credits, acks and rejections handled by
    the edge's code), at a fixed frame rate; and one live Analytics.Subscribe subscriber.

What it reports, every ``--report-every`` seconds
    frames captured / sent / acknowledged / answered; frames lost, computed from ids (camera,
    sequence) with reasons (:mod:`layercast.bench.ledger`); the backlog (frames not answered
    yet) and the age of its oldest frame; p50 / p99 end-to-end latency (capture time -> result
    received by the subscriber) of the interval's results; resident memory (and its growth
    since the first interval, the warm-up), open file descriptors and CPU use of the cloud
    process and of this process, from ``/proc``. Then a summary table.

``--ramp``
    Cameras 1, 2, 4, 8, 16, 24, 32, … (then every 8) at the fixed frame rate, a short step each
    against one cloud process, until a step's p99 latency (counting frames still unanswered at
    the end of the step at their age so far) passes ``--max-latency-ms`` or its oldest
    unanswered frame is older than that (frames back up); then the counts between the last
    step that held and the first that did not are bisected. Reports the largest count that held.
"""

from __future__ import annotations

import array
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from layercast.bench import procstat
from layercast.bench.cloud_process import CloudProcess
from layercast.bench.fleet import (
    ABANDONED,
    ReplayCamera,
    ResultSubscriber,
    now_us,
    stop_tasks,
    wait_connected,
)
from layercast.bench.ledger import Ledger
from layercast.bench.soak_report import (
    INTERVAL_HEAD,
    STEP_HEAD,
    IntervalRow,
    ProcFigures,
    StepRow,
    format_interval,
    format_step,
    percentile,
    summary_table,
    write_rows,
)

#: A file descriptor count that moves by at most this much after warm-up is "flat" (a transient
#: socket or SQLite journal may be open at the moment of a sample).
FD_TOLERANCE = 3


@dataclass
class SoakOptions:
    cameras: int = 16
    fps: float = 10.0
    minutes: float = 10.0
    #: Square frame side. 64 is the codec's padding unit, the smallest size that wastes nothing;
    #: the cloud's cost per frame barely depends on it (entropy decoding dominates; see docs/soak.md).
    size: int = 64
    report_every: float = 60.0
    out: Path | None = None
    model: str = "default"
    #: Architecture of an untrained model to run instead (with ``model``'s task model); see untrained.py.
    untrained: str | None = None
    #: Distinct pre-encoded frames per camera (replayed in turn).
    pool: int = 8
    ramp: bool = False
    step_seconds: float = 20.0
    step_warmup: float = 5.0
    max_cameras: int = 64
    max_latency_ms: float = 1000.0
    refine: bool = True
    #: Seconds given to the backlog to be answered after capture stops.
    drain_s: float = 30.0
    #: SQLite ``synchronous`` of the outboxes (the edge's own setting; FULL fsyncs every commit).
    outbox_sync: str = "NORMAL"
    #: ``KEY=VALUE`` settings for the cloud (``layercast cloud --set``).
    cloud_set: tuple[str, ...] = ()
    threads: int = 1
    progress: bool = True

    def validate(self) -> None:
        if self.cameras < 1 or self.max_cameras < 1:
            raise SystemExit("--cameras and --max-cameras must be at least 1")
        if self.fps <= 0 or self.minutes <= 0 or self.report_every <= 0:
            raise SystemExit("--fps, --minutes and --report-every must be positive")
        if self.size < 16:
            raise SystemExit("--size must be at least 16")
        if self.pool < 1:
            raise SystemExit("--pool must be at least 1")


def say(line: str = "") -> None:
    """Print above the progress bar."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


# -- the processes being watched ------------------------------------------------------------------


class Watch:
    """/proc figures of the cloud and of this process; RSS growth against a baseline taken after warm-up."""

    def __init__(self, cloud_pid: int) -> None:
        self.pids = {"cloud": cloud_pid, "load": os.getpid()}
        self.prev = {k: procstat.sample(p) for k, p in self.pids.items()}
        self.baseline: dict[str, procstat.ProcSample] | None = None
        self.history: list[dict[str, procstat.ProcSample]] = []

    def take(self) -> dict[str, ProcFigures]:
        now = {k: procstat.sample(p) for k, p in self.pids.items()}
        base = self.baseline or now
        out = {
            k: ProcFigures(
                rss_mib=s.rss_mib,
                rss_growth_pct=procstat.growth_percent(base[k], s),
                fds=s.fds,
                cpu_pct=procstat.cpu_percent(self.prev[k], s),
            )
            for k, s in now.items()
        }
        self.prev = now
        self.history.append(now)
        return out

    def set_baseline(self) -> None:
        """The latest sample is the reference for growth from now on (the end of the warm-up)."""
        self.baseline = self.history[-1]


# -- the rig: cloud, cameras, subscriber ------------------------------------------------------------


class Rig:
    """The cloud process, the cameras (created on demand, each with its encoded pool) and the ledger."""

    def __init__(self, opts: SoakOptions, workdir: Path, camera_ids: Sequence[str]) -> None:
        import torch

        from layercast.cloud.security.credentials import new_token
        from layercast.shared.codec import load_codec

        self.opts = opts
        self.workdir = workdir
        torch.set_num_threads(opts.threads)
        if opts.untrained:
            from layercast.bench.untrained import untrained_base

            path = untrained_base(opts.untrained, opts.model, workdir / "models")
            opts = self.opts = replace(opts, model=str(path))
        self.codec = load_codec(opts.model, device="cpu")
        self.tokens = {cam: new_token() for cam in camera_ids}
        self.cloud = CloudProcess(workdir / "cloud", opts.model, self.tokens, opts.cloud_set, opts.threads)
        self.ledger = Ledger()
        self.cameras: list[ReplayCamera] = []
        self.encode_s = 0.0
        self.encoded = 0
        self.pool_bytes: list[int] = []

    def cameras_upto(self, n: int) -> list[ReplayCamera]:
        """The first ``n`` cameras (encoding the pools of new ones now, before any timing)."""
        from layercast.shared.data.synth import render_scene

        ids = list(self.tokens)
        while len(self.cameras) < n:
            i = len(self.cameras)
            images = [
                render_scene(7919 * (i + 1) + k, self.opts.size, self.opts.size).image
                for k in range(self.opts.pool)
            ]
            t = time.perf_counter()
            pool = [f.base for f in self.codec.encode_batch(images, layers="base")]
            self.encode_s += time.perf_counter() - t
            self.encoded += len(pool)
            self.pool_bytes += [len(b) for b in pool]
            cam = ReplayCamera(
                ids[i],
                self.tokens[ids[i]],
                self.codec.base_model_id,
                pool,
                self.workdir / "edge",
                self.ledger,
                synchronous=self.opts.outbox_sync,
            )
            self.cameras.append(cam)
        return self.cameras[:n]

    def describe(self, mode: str) -> list[str]:
        o = self.opts
        mean_bytes = statistics.fmean(self.pool_bytes) if self.pool_bytes else float("nan")
        enc_ms = 1000 * self.encode_s / max(1, self.encoded)
        return [
            f"layercast bench soak{' --ramp' if mode == 'ramp' else ''}: {o.size}x{o.size} synthetic frames, "
            f"{o.fps:g} frames/s per camera",
            f"  model      {o.model} = {self.codec.base_model_id} ({self.codec.task}"
            + (
                f"; UNTRAINED {o.untrained} architecture, task model of the shipped one: costs are real, results are not"
                if o.untrained
                else ""
            )
            + "); base bitstreams "
            f"{mean_bytes:.0f} bytes/frame",
            f"  cameras    replay a pool of {o.pool} frames each, encoded once with the shipped codec "
            f"({enc_ms:.1f} ms/frame on this CPU, not in the latency), with fresh sequence numbers",
            "             through the edge's own Outbox (SQLite, synchronous="
            f"{o.outbox_sync}) and EdgeLink: credits, acks and rejections honoured as an edge does",
            "  cloud      a separate `layercast cloud` process, 1 torch thread, shipped configuration"
            + (f" plus {' '.join(o.cloud_set)}" if o.cloud_set else "")
            + ", plain text on 127.0.0.1",
            f"  command    {' '.join(Path(a).name if a == sys.executable else a for a in self.cloud.command())}",
            "  results    one live Analytics.Subscribe client in this process (resumes from its last "
            "sequence if told it lagged)",
            "  latency    capture time (frame appended to the outbox) -> result received by the subscriber",
            "  lost       by id (camera, sequence): captured frames without a result, with the reason",
            f"  machine    {os.cpu_count()} CPUs shared with other work; load average {load_average():.1f} at start",
        ]


async def _drain(ledger: Ledger, timeout: float) -> bool:
    """Wait (polling the ledger, which the subscriber fills) until no frame waits for its result."""
    deadline = time.monotonic() + timeout
    while ledger.totals().outstanding:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)
    return True


# -- soak -----------------------------------------------------------------------------------------------


@dataclass
class SoakResult:
    rows: list[IntervalRow]
    summary: dict[str, Any]
    table: str


class _Interval:
    """Builds an :class:`IntervalRow` from the ledger, the cameras' counters and /proc."""

    def __init__(self, rig: Rig, cams: Sequence[ReplayCamera], watch: Watch) -> None:
        self.rig, self.cams, self.watch = rig, cams, watch
        self.prev_results = 0
        self.prev_t = time.monotonic()

    def row(self, t_s: float, latencies: Sequence[float]) -> IntervalRow:
        tot = self.rig.ledger.totals()
        figs = self.watch.take()
        now = time.monotonic()
        rate = (tot.results - self.prev_results) / max(1e-9, now - self.prev_t)
        self.prev_results, self.prev_t = tot.results, now
        oldest = (now_us() - tot.oldest_outstanding_us) / 1e6 if tot.oldest_outstanding_us else 0.0
        return IntervalRow(
            t_s=t_s,
            cameras=len(self.cams),
            captured=tot.captured,
            sent=sum(c.stats.frames_sent for c in self.cams),
            acked=sum(c.stats.frames_acked for c in self.cams),
            results=tot.results,
            results_per_s=rate,
            lost=tot.lost,
            outstanding=tot.outstanding,
            oldest_outstanding_s=oldest,
            p50_ms=percentile(latencies, 50),
            p99_ms=percentile(latencies, 99),
            latency_samples=len(latencies),
            cloud=figs["cloud"],
            load=figs["load"],
            load_average=load_average(),
            lost_by_reason=tot.lost_by_reason,
        )


async def _soak(rig: Rig) -> SoakResult:
    o = rig.opts
    ledger = rig.ledger
    cams = rig.cameras_upto(o.cameras)
    sub = ResultSubscriber(rig.cloud.target, ledger, rig.cloud.operator_token)
    sub_task = asyncio.create_task(sub.run())
    link_stop, capture_stop = asyncio.Event(), asyncio.Event()
    links = [c.new_link(rig.cloud.target) for c in cams]
    link_tasks = [asyncio.create_task(link.run(link_stop)) for link in links]
    capture_tasks: list[asyncio.Task[None]] = []
    try:
        await wait_connected(links, 60.0)
        watch = Watch(rig.cloud.pid)
        interval = _Interval(rig, cams, watch)
        capture_tasks = [
            asyncio.create_task(c.capture(capture_stop, o.fps, phase_s=i / (len(cams) * o.fps)))
            for i, c in enumerate(cams)
        ]
        duration = 60.0 * o.minutes
        t0 = time.monotonic()
        rows: list[IntervalRow] = []
        after_warmup = array.array("d")  # latencies (ms) after the first interval
        first = array.array("d")  # those of the first interval (used when the run has only one)
        say(INTERVAL_HEAD)
        with tqdm(
            total=int(round(duration)),
            unit="s",
            desc=f"soak {len(cams)} cameras",
            disable=not o.progress,
            mininterval=5.0,
            file=sys.stderr,
            dynamic_ncols=True,
        ) as bar:
            k = 1
            while True:
                t_end = min(t0 + k * o.report_every, t0 + duration)
                while (now := time.monotonic()) < t_end:
                    await asyncio.sleep(min(1.0, t_end - now))
                    bar.update(int(min(time.monotonic(), t_end) - t0) - bar.n)
                    if not rig.cloud.alive():
                        raise RuntimeError(f"the cloud process died:\n{rig.cloud.tail()}")
                lat = ledger.take_latencies()
                row = interval.row(t_end - t0, lat)
                if k == 1:
                    watch.set_baseline()
                    first.extend(lat)
                else:
                    after_warmup.extend(lat)
                rows.append(row)
                say(format_interval(row))
                bar.set_postfix(results=row.results, p99_ms=f"{row.p99_ms:.0f}", backlog=row.outstanding)
                if t_end >= t0 + duration:
                    break
                k += 1
        capture_stop.set()
        await asyncio.gather(*capture_tasks)
        drained = await _drain(ledger, o.drain_s)
        tail = ledger.take_latencies()  # frames captured during the run, answered while draining
        (after_warmup if len(rows) > 1 else first).extend(tail)
        where: dict[str, int] = {}
        for cam in cams:
            book = ledger.cameras[cam.camera_id]
            open_seqs = [s for s in book.pending if s > book.last_result]
            for k2, v in (await cam.where_unanswered(open_seqs)).items():
                where[k2] = where.get(k2, 0) + v
        final = interval.row(time.monotonic() - t0, tail)
        # Before the links are stopped (a requested stop counts as a disconnect too).
        disconnects = sum(c.stats.disconnects for c in cams)
    finally:
        capture_stop.set()
        link_stop.set()
        await asyncio.gather(*link_tasks, return_exceptions=True)
        await stop_tasks([sub_task, *capture_tasks])
        for c in cams:
            c.close()
    latencies = after_warmup if len(rows) > 1 else first
    summary = _soak_summary(rig, rows, final, latencies, where, drained, sub, cams, watch, disconnects)
    return SoakResult(rows, summary, _soak_table(summary))


def _soak_summary(
    rig: Rig,
    rows: Sequence[IntervalRow],
    final: IntervalRow,
    latencies: Sequence[float],
    where: dict[str, int],
    drained: bool,
    sub: ResultSubscriber,
    cams: Sequence[ReplayCamera],
    watch: Watch,
    disconnects: int,
) -> dict[str, Any]:
    o = rig.opts
    tot = rig.ledger.totals()
    steady = rows[1:] or rows
    all_lat = list(latencies)
    base = watch.baseline or watch.history[0]
    hist = watch.history[watch.history.index(base) :] if base in watch.history else watch.history

    answered = final.results - rows[0].results  # since the baseline sample (end of the first interval)

    def proc(who: str) -> dict[str, Any]:
        b = base[who]
        samples = [h[who] for h in hist]
        rss = [s.rss_bytes for s in samples]
        fds = [s.fds for s in samples]
        return {
            "rss_after_warmup_mib": b.rss_mib,
            "rss_end_mib": samples[-1].rss_mib,
            "rss_max_mib": max(rss) / (1 << 20),
            "rss_growth_end_pct": procstat.growth_percent(b, samples[-1]),
            "rss_growth_max_pct": 100.0 * (max(rss) - b.rss_bytes) / b.rss_bytes,
            "fds_after_warmup": b.fds,
            "fds_end": samples[-1].fds,
            "fds_min": min(fds),
            "fds_max": max(fds),
            "cpu_mean_pct": statistics.fmean(getattr(r, who).cpu_pct for r in steady),
            # CPU time per frame answered after warm-up: what one frame costs, whatever share of the
            # (shared) CPU the process got; 1000 / this = frames/s one dedicated core would answer.
            "cpu_ms_per_frame": 1000 * (samples[-1].cpu_s - b.cpu_s) / answered
            if answered > 0
            else float("nan"),
        }

    unanswered = {**tot.lost_by_reason}
    for k, v in where.items():
        if v:
            unanswered[f"no result by the end of the run: {k}"] = v
    lost_ids = tot.captured - tot.results
    offered = len(cams) * o.fps
    steady_rate = statistics.fmean(r.results_per_s for r in steady)
    worst_p99 = max((r.p99_ms for r in steady), default=float("nan"))
    kept_up = drained and worst_p99 <= o.max_latency_ms and lost_ids == 0
    cloud, load = proc("cloud"), proc("load")
    return {
        "cameras": len(cams),
        "fps_per_camera": o.fps,
        "offered_fps": offered,
        "minutes": o.minutes,
        "size": o.size,
        "frames_captured": tot.captured,
        "frames_answered": tot.results,
        "frames_lost": lost_ids,
        # of which: given up for good (dropped, refused, skipped) vs still queued when the run stopped
        "frames_dropped_refused_skipped": tot.lost,
        "frames_unanswered_at_end": tot.outstanding,
        "lost_by_reason": unanswered,
        "lost_sequences": {c: _ranges(s) for c, s in rig.ledger.unanswered().items()},
        "duplicates": tot.duplicates,
        "out_of_order": tot.out_of_order,
        "unknown_results": tot.unknown,
        "drained": drained,
        "results_fps_after_warmup": steady_rate,
        "latency_p50_ms": percentile(all_lat, 50),
        "latency_p99_ms": percentile(all_lat, 99),
        "worst_interval_p99_ms": worst_p99,
        "kept_up": kept_up,
        "cloud": cloud,
        "load": load,
        "fds_flat": {
            who: max(abs(p["fds_max"] - p["fds_after_warmup"]), abs(p["fds_min"] - p["fds_after_warmup"]))
            <= FD_TOLERANCE
            for who, p in (("cloud", cloud), ("load", load))
        },
        "stream_disconnects": disconnects,
        "frames_resent": sum(c.stats.frames_resent for c in cams),
        "subscriber_resumes": sub.resumes,
        "subscriber_errors": sub.errors,
        "capture_max_late_ms": 1000 * max(c.max_late_s for c in cams),
        "final": asdict(final),
    }


def _ranges(seqs: Sequence[int]) -> str:
    """``1-3,7`` for [1, 2, 3, 7] (sequences of lost frames, compactly)."""
    out: list[str] = []
    start = prev = None
    for s in [*seqs, None]:
        if s is not None and prev is not None and s == prev + 1:
            prev = s
            continue
        if start is not None:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
        start = prev = s
    return ",".join(out)


def _soak_table(s: dict[str, Any]) -> str:
    c, ld = s["cloud"], s["load"]

    def ok(flag: bool) -> str:
        return "yes" if flag else "NO"

    reasons = "; ".join(f"{v} {k}" for k, v in sorted(s["lost_by_reason"].items())) or "none"
    pairs = [
        (
            "load",
            f"{s['cameras']} cameras x {s['fps_per_camera']:g} frames/s = {s['offered_fps']:g} frames/s offered, "
            f"{s['minutes']:g} min, {s['size']}x{s['size']}",
        ),
        ("frames captured / answered (by id)", f"{s['frames_captured']} / {s['frames_answered']}"),
        ("frames without a result (captured - answered)", f"{s['frames_lost']}  ({reasons})"),
        ("  of which dropped / refused / skipped", f"{s['frames_dropped_refused_skipped']}"),
        ("  of which still queued when the run stopped", f"{s['frames_unanswered_at_end']}"),
        ("duplicates / out of order", f"{s['duplicates']} / {s['out_of_order']}"),
        ("results/s after warm-up", f"{s['results_fps_after_warmup']:.1f} (offered {s['offered_fps']:g})"),
        ("latency p50 / p99 after warm-up", f"{s['latency_p50_ms']:.1f} / {s['latency_p99_ms']:.1f} ms"),
        ("worst per-interval p99", f"{s['worst_interval_p99_ms']:.1f} ms"),
        (
            "cloud RSS after warm-up / end / max",
            f"{c['rss_after_warmup_mib']:.1f} / {c['rss_end_mib']:.1f} / {c['rss_max_mib']:.1f} MiB",
        ),
        (
            "cloud RSS growth end / max",
            f"{c['rss_growth_end_pct']:+.1f} % / {c['rss_growth_max_pct']:+.1f} %",
        ),
        (
            "cloud open fds after warm-up / end (min-max)",
            f"{c['fds_after_warmup']} / {c['fds_end']} ({c['fds_min']}-{c['fds_max']})",
        ),
        ("cloud CPU after warm-up (mean)", f"{c['cpu_mean_pct']:.0f} % of one core"),
        (
            "cloud CPU per answered frame",
            f"{c['cpu_ms_per_frame']:.1f} ms (one dedicated core: ~{1000 / c['cpu_ms_per_frame']:.0f} frames/s "
            f"= ~{1000 / c['cpu_ms_per_frame'] / s['fps_per_camera']:.1f} cameras at {s['fps_per_camera']:g} fps)",
        ),
        (
            "load RSS after warm-up / end / max",
            f"{ld['rss_after_warmup_mib']:.1f} / {ld['rss_end_mib']:.1f} / {ld['rss_max_mib']:.1f} MiB",
        ),
        (
            "load RSS growth end / max",
            f"{ld['rss_growth_end_pct']:+.1f} % / {ld['rss_growth_max_pct']:+.1f} %",
        ),
        (
            "load open fds after warm-up / end (min-max)",
            f"{ld['fds_after_warmup']} / {ld['fds_end']} ({ld['fds_min']}-{ld['fds_max']})",
        ),
        ("load CPU after warm-up (mean)", f"{ld['cpu_mean_pct']:.0f} % of one core"),
        ("stream disconnects / frames resent", f"{s['stream_disconnects']} / {s['frames_resent']}"),
        ("subscriber resumes / errors", f"{s['subscriber_resumes']} / {s['subscriber_errors']}"),
        ("worst capture delay (load process lag)", f"{s['capture_max_late_ms']:.0f} ms"),
        ("no frame dropped / refused / skipped", ok(s["frames_dropped_refused_skipped"] == 0)),
        ("every frame answered (lost = 0)", ok(s["frames_lost"] == 0)),
        (
            "RSS growth < 10 % (cloud / load)",
            f"{ok(c['rss_growth_max_pct'] < 10)} / {ok(ld['rss_growth_max_pct'] < 10)}",
        ),
        (
            f"open fds flat, within +-{FD_TOLERANCE} (cloud / load)",
            f"{ok(s['fds_flat']['cloud'])} / {ok(s['fds_flat']['load'])}",
        ),
        ("kept up (drained, every p99 <= limit)", ok(s["kept_up"])),
    ]
    return summary_table(pairs)


# -- ramp ----------------------------------------------------------------------------------------------


def ramp_counts(max_cameras: int) -> Iterator[int]:
    """1, 2, 4, 8, 16, then every 8: 24, 32, … up to ``max_cameras``."""
    n = 1
    while n <= max_cameras:
        yield n
        n = n * 2 if n < 16 else n + 8


async def _step(rig: Rig, n: int, bar: tqdm) -> StepRow:
    o = rig.opts
    ledger = rig.ledger
    cams = rig.cameras_upto(n)
    link_stop, capture_stop = asyncio.Event(), asyncio.Event()
    links = [c.new_link(rig.cloud.target) for c in cams]
    link_tasks = [asyncio.create_task(link.run(link_stop)) for link in links]
    capture_tasks: list[asyncio.Task[None]] = []
    try:
        await wait_connected(links, 60.0)
        capture_tasks = [
            asyncio.create_task(c.capture(capture_stop, o.fps, phase_s=i / (n * o.fps)))
            for i, c in enumerate(cams)
        ]
        await asyncio.sleep(o.step_warmup)
        ledger.take_latencies()
        before = ledger.totals()
        lost_before = before.lost - before.lost_by_reason.get(ABANDONED, 0)
        watch = Watch(rig.cloud.pid)
        t0 = time.monotonic()
        await asyncio.sleep(o.step_seconds)
        lat = ledger.take_latencies()
        ages = ledger.pending_ages_ms(now_us())
        figs = watch.take()
        after = ledger.totals()
        rate = (after.results - before.results) / (time.monotonic() - t0)
        capture_stop.set()
        await asyncio.gather(*capture_tasks)
        p99 = percentile([*lat, *ages], 99)
        oldest_ms = max(ages, default=0.0)
        why = []
        if p99 > o.max_latency_ms:
            why.append(f"p99 {p99:.0f} ms > {o.max_latency_ms:g} ms")
        if oldest_ms > o.max_latency_ms:
            why.append(f"frames back up: oldest unanswered {oldest_ms / 1000:.1f} s, backlog {len(ages)}")
        held = not why
        # Between steps: a step that held is answered in moments; one that did not leaves a backlog
        # that is given up (the next step must start from an idle cloud).
        if held:
            await _drain(ledger, o.drain_s)
    finally:
        capture_stop.set()
        link_stop.set()
        await asyncio.gather(*link_tasks, return_exceptions=True)
        await stop_tasks(capture_tasks)
    for c in cams:
        if len(c.outbox):
            await c.abandon_queue()
    await _drain(ledger, o.drain_s)  # what the cloud had stored is still answered
    end = ledger.totals()
    lost_step = end.lost - end.lost_by_reason.get(ABANDONED, 0) - lost_before
    bar.update(1)
    return StepRow(
        cameras=n,
        offered_fps=n * o.fps,
        results_fps=rate,
        p50_ms=percentile([*lat, *ages], 50),
        p99_ms=p99,
        oldest_outstanding_s=oldest_ms / 1000,
        outstanding=len(ages),
        lost=lost_step,
        held=held,
        cloud_rss_mib=figs["cloud"].rss_mib,
        cloud_fds=figs["cloud"].fds,
        cloud_cpu_pct=figs["cloud"].cpu_pct,
        load_cpu_pct=figs["load"].cpu_pct,
        load_average=load_average(),
        why="; ".join(why),
    )


async def _ramp(rig: Rig) -> tuple[list[StepRow], int]:
    o = rig.opts
    sub = ResultSubscriber(rig.cloud.target, rig.ledger, rig.cloud.operator_token)
    sub_task = asyncio.create_task(sub.run())
    steps: list[StepRow] = []
    held_max, failed = 0, None
    counts = list(ramp_counts(o.max_cameras))
    say(STEP_HEAD)
    try:
        with tqdm(
            total=len(counts), unit="step", desc="ramp", disable=not o.progress, file=sys.stderr
        ) as bar:
            for n in counts:
                row = await _step(rig, n, bar)
                steps.append(row)
                say(format_step(row))
                if not row.held:
                    failed = n
                    bar.total = len(steps)
                    break
                held_max = n
            if o.refine and failed is not None:
                lo, hi = held_max, failed
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    bar.total += 1
                    row = await _step(rig, mid, bar)
                    steps.append(row)
                    say(format_step(row))
                    lo, hi = (mid, hi) if row.held else (lo, mid)
                held_max = lo
    finally:
        await stop_tasks([sub_task])
        for c in rig.cameras:
            c.close()
    return steps, held_max


# -- the command ----------------------------------------------------------------------------------------


def run(opts: SoakOptions) -> dict[str, Any]:
    """Run the soak (or the ramp with ``opts.ramp``), print the figures; returns the summary."""
    opts.validate()
    mode = "ramp" if opts.ramp else "soak"
    count = opts.max_cameras if opts.ramp else opts.cameras
    with tempfile.TemporaryDirectory(prefix="layercast-soak-") as tmp:
        rig = Rig(opts, Path(tmp), [f"cam-{i:03d}" for i in range(count)])
        rig.cloud.launch()
        try:
            rig.cameras_upto(opts.cameras if not opts.ramp else 1)  # while the cloud loads its model
            rig.cloud.wait_serving()
            for line in rig.describe(mode):
                say(line)
            say(f"  cloud      pid {rig.cloud.pid} serving on {rig.cloud.target}\n")
            result = _run_mode(rig, mode)
        finally:
            status = rig.cloud.stop()
            if opts.out is not None:
                opts.out.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(rig.cloud.stderr_path, opts.out / f"{mode}-cloud.log")
        say(f"\ncloud exited with status {status}; load average {load_average():.1f} at the end")
        return result


def _run_mode(rig: Rig, mode: str) -> dict[str, Any]:
    opts = rig.opts
    meta: dict[str, Any] = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()}
    }
    meta["description"] = rig.describe(mode)
    if mode == "soak":
        res = asyncio.run(_soak(rig))
        say("\nsummary")
        say(res.table)
        if opts.out is not None:
            write_rows(opts.out, "soak", res.rows, {**meta, "summary": res.summary})
        return res.summary
    steps, held = asyncio.run(_ramp(rig))
    say("\nramp")
    say(STEP_HEAD)
    for row in sorted(steps, key=lambda r: r.cameras):
        say(format_step(row))
    line = (
        f"\nlargest camera count one cloud process held at {opts.fps:g} frames/s each "
        f"(p99 <= {opts.max_latency_ms:g} ms, no backlog): {held}"
    )
    say(line)
    summary = {"largest_cameras_held": held, "fps_per_camera": opts.fps, "steps": [asdict(r) for r in steps]}
    if opts.out is not None:
        write_rows(opts.out, "ramp", steps, {**meta, "summary": summary})
    return summary
