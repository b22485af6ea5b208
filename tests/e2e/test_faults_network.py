"""Network faults between a real edge and a real cloud: a TCP proxy in the middle (tests/e2e/tcpproxy.py)
stalls the link (a black hole: sockets open, no byte moves) or cuts it (every connection reset).

What must hold:

* a stall is noticed by HTTP/2 keepalive within ``keepalive_time + keepalive_timeout`` (plus slack
  for a loaded machine) on the edge, and within the cloud's own keepalive bound on the cloud; the
  edge's stall watchdog is switched off here so the keepalive alone is measured;
* after the link heals the edge reconnects and every frame arrives once, in order;
* while the link is down the outbox keeps at most ``outbox.max_frames``; the frames beyond that
  are dropped *and counted* (edge stats, the outbox's persistent counter the cloud sees in
  heartbeats): captured = delivered + dropped, nothing silently gone.

Each measured figure is printed (``pytest -s``) with the word FIGURE.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import HEIGHT, WIDTH
from tests.e2e.probes import results, sample, when_logged
from tests.e2e.services import CloudProcess, EdgeProcess, Model, free_port, merge, wait_until
from tests.e2e.tcpproxy import TcpProxy

TOKENS = {cam: f"net-{cam}-" + "n" * 24 for cam in ("n-1", "n-2", "n-3")}
#: The edge's keepalive in these tests: ping after 1 s without traffic, give up 1 s later.
EDGE_KEEPALIVE_MS = (1000, 1000)
#: The cloud's keepalive (seconds): ping after 2 s, give up 1 s later.
CLOUD_KEEPALIVE_S = (2.0, 1.0)
#: Allowance for scheduling on a loaded 2-core machine and for the 10 ms log polling.
SLACK_S = 2.0
LOST = "edge link to"  # ... "<target> lost (<reason>)": one line per ended stream or failed attempt
UP = "edge link up"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, model: Model) -> Iterator[CloudProcess]:
    """One cloud for the module with a short keepalive, frequent heartbeats (so an edge reports its
    drop counter soon after it reconnects) and /metrics on a known port."""
    proc = CloudProcess(
        tmp_path_factory.mktemp("net-cloud"),
        model,
        TOKENS,
        {
            "keepalive_time_s": CLOUD_KEEPALIVE_S[0],
            "keepalive_timeout_s": CLOUD_KEEPALIVE_S[1],
            "heartbeat_interval_ms": 100,
            "metrics_port": free_port(),
        },
    )
    try:
        proc.launch()
        yield proc
    finally:
        proc.cleanup()


def edge_via(proxy: TcpProxy, work: Path, model: Model, cam: str, seed: int, **extra: Any) -> EdgeProcess:
    """A real edge for ``cam`` whose link goes through ``proxy``; a finite synthetic camera."""
    base = {
        "source": {"width": WIDTH, "height": HEIGHT},
        "link": {
            "keepalive_time_ms": EDGE_KEEPALIVE_MS[0],
            "keepalive_timeout_ms": EDGE_KEEPALIVE_MS[1],
            "stall_timeout_s": 0.0,  # measure the keepalive alone
            "welcome_timeout_s": 2.0,
        },
    }
    edge = EdgeProcess(
        work / cam, model, cam, TOKENS[cam], proxy.target, f"synthetic:{seed}", merge(base, extra)
    )
    edge.start(backoff_max_s=1.0)
    return edge


def lost_lines(edge: EdgeProcess) -> list[str]:
    return [ln for ln in edge.stderr().splitlines() if LOST in ln and " lost (" in ln]


def assert_all_once(cloud: CloudProcess, cam: str, n: int) -> None:
    """The cloud keeps exactly frames 1..n of ``cam``, in capture order."""
    got = results(cloud.target, cam, n, timeout=120)
    assert [r.sequence for r in got] == list(range(1, n + 1))
    times = [r.capture_time_us for r in got]
    assert times == sorted(times) and len(set(times)) == n  # each a different capture, in order


def test_stalled_link_is_noticed_by_keepalive_within_its_bound_and_nothing_is_lost(
    cloud: CloudProcess, model: Model, tmp_path: Path
) -> None:
    n = 60
    metrics = cloud.config["metrics_port"]
    with TcpProxy(cloud.target) as proxy:
        edge = edge_via(proxy, tmp_path, model, "n-1", 1, source={"fps": 6.0, "limit": n})
        try:
            cloud.wait_serving()
            results(cloud.target, "n-1", 4, timeout=180)  # streaming through the proxy
            before = len(lost_lines(edge))
            t0 = time.monotonic()
            proxy.stall()
            noticed = when_logged(lambda: "\n".join(lost_lines(edge)), LOST, before, timeout=60) - t0

            def cloud_noticed() -> float | None:
                connected = sample(metrics, "layercast_cloud_camera_connected", {"camera": "n-1"})
                return time.monotonic() - t0 if connected == 0 else None

            cloud_s = wait_until(cloud_noticed, 60, "the cloud to drop the stalled stream", interval=0.02)
            time.sleep(2.0)  # the edge retries into the black hole meanwhile (its Welcome never comes)
            ups = edge.stderr().count(UP)
            t1 = time.monotonic()
            proxy.pass_()
            healed = when_logged(edge.stderr, UP, ups, timeout=30) - t1
            run = edge.finish(timeout=180)
        except BaseException:
            print(cloud.describe(), edge.describe(), sep="\n")
            raise
        finally:
            edge.cleanup()

    edge_bound = sum(EDGE_KEEPALIVE_MS) / 1000 + SLACK_S
    cloud_bound = sum(CLOUD_KEEPALIVE_S) + SLACK_S
    line = lost_lines(edge)[before]
    print(
        f"\nFIGURE stall: edge noticed after {noticed:.2f}s (keepalive {EDGE_KEEPALIVE_MS} ms, bound "
        f"{edge_bound:.1f}s), cloud after {cloud_s:.2f}s (bound {cloud_bound:.1f}s), reconnected "
        f"{healed:.2f}s after the link healed; frames {n}, resent {run.stats['frames_resent']}, "
        f"duplicate acks {run.stats['frames_acked_duplicate']}\n  {line}"
    )
    assert "UNAVAILABLE" in line, line  # the transport died (watchdog off, Welcome long received)
    assert noticed <= edge_bound
    assert cloud_s <= cloud_bound
    assert run.returncode == 0
    s = run.stats
    assert s["frames_captured"] == n and s["frames_dropped_capture"] == 0, s
    assert s["frames_dropped_outbox"] == 0 and s["frames_rejected"] == 0, s
    assert s["connects"] >= 2 and s["frames_resent"] >= 1, s  # frames in flight at the stall went again
    assert_all_once(cloud, "n-1", n)


def test_cut_link_reconnects_and_a_full_outbox_counts_every_frame_it_drops(
    cloud: CloudProcess, model: Model, tmp_path: Path
) -> None:
    """Two edges behind one proxy that resets every connection for a while: n-2 has room in its
    outbox for the whole cut, n-3 keeps only 6 frames."""
    # 12 s of capture: the sources still run when the link heals (a camera whose outbox is empty when
    # its source ends stops at once, cut or not)
    n, fps, cut_s, bound = 96, 8.0, 3.0, 6
    metrics = cloud.config["metrics_port"]
    with TcpProxy(cloud.target) as proxy:
        edges = {
            "n-2": edge_via(proxy, tmp_path, model, "n-2", 2, source={"fps": fps, "limit": n}),
            "n-3": edge_via(
                proxy,
                tmp_path,
                model,
                "n-3",
                3,
                source={"fps": fps, "limit": n},
                outbox={"max_frames": bound},
            ),
        }
        try:
            cloud.wait_serving()
            for cam in edges:
                results(cloud.target, cam, 3, timeout=180)
            before = {cam: len(lost_lines(e)) for cam, e in edges.items()}
            ups = {cam: e.stderr().count(UP) for cam, e in edges.items()}
            accepted = proxy.accepted
            t0 = time.monotonic()
            proxy.drop()
            noticed = {
                cam: when_logged(lambda e=e: "\n".join(lost_lines(e)), LOST, before[cam], 30) - t0
                for cam, e in edges.items()
            }
            time.sleep(max(0.0, cut_s - (time.monotonic() - t0)))
            retries = proxy.accepted - accepted  # connections reset on accept while the link was cut
            t1 = time.monotonic()
            proxy.pass_()
            healed = {cam: when_logged(e.stderr, UP, ups[cam], 30) - t1 for cam, e in edges.items()}

            def reported_drops() -> float | None:
                return sample(metrics, "layercast_cloud_edge_dropped_frames", {"camera": "n-3"}) or None

            # the heartbeat that opens the stream after the reconnect carries the outbox's drop counter
            seen_by_cloud = wait_until(reported_drops, 30, "n-3's drop count in its heartbeats")
            seen_by_cloud = sample(metrics, "layercast_cloud_edge_dropped_frames", {"camera": "n-3"})
            runs = {cam: e.finish(timeout=180) for cam, e in edges.items()}
        except BaseException:
            print(cloud.describe(), *(e.describe() for e in edges.values()), sep="\n")
            raise
        finally:
            for e in edges.values():
                e.cleanup()

    full = runs["n-3"].stats
    dropped = full["frames_dropped_outbox"] + full["frames_dropped_capture"]
    kept = results(cloud.target, "n-3", n - dropped, timeout=60)
    missing = sorted(set(range(1, n + 1)) - {r.sequence for r in kept})
    print(
        f"\nFIGURE cut: noticed after {', '.join(f'{c} {t:.2f}s' for c, t in noticed.items())}; "
        f"{retries} reconnect attempts reset during {cut_s:.0f}s; reconnected "
        f"{', '.join(f'{c} {t:.2f}s' for c, t in healed.items())} after the link healed\n"
        f"FIGURE outbox bound {bound}: n-3 captured {full['frames_captured']}, delivered {len(kept)}, "
        f"dropped {dropped} (counted by the edge {full['frames_dropped_outbox']}, reported to the cloud "
        f"{seen_by_cloud:.0f}), lost uncounted {n - len(kept) - dropped}; n-2 delivered all {n}"
    )
    for cam, t in noticed.items():
        assert t <= SLACK_S, (cam, t)  # a reset is noticed at once, no keepalive needed
    for cam, t in healed.items():
        assert t <= 1.0 + SLACK_S, (cam, t)  # within the backoff cap of 1 s
    assert retries >= 2  # both edges kept trying during the cut

    assert runs["n-2"].returncode == 0 and runs["n-2"].stats["frames_dropped_outbox"] == 0
    assert_all_once(cloud, "n-2", n)

    assert runs["n-3"].returncode == 0
    assert full["frames_captured"] == n and full["frames_rejected"] == 0
    # the outbox overflowed (how many frames did not fit depends on the capture rate the loaded machine
    # reached during the cut: printed above, not asserted)
    assert dropped > 0
    assert len(missing) == dropped  # each frame not delivered is a counted drop, and vice versa
    # the cloud knows from the heartbeats (the last drops may come after the last heartbeat: frames
    # in flight are never dropped, so a new frame can be when every kept one is still in flight)
    assert 0 < seen_by_cloud <= dropped
    assert [r.sequence for r in kept] == sorted(r.sequence for r in kept)
