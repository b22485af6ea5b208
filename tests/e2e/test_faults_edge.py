"""kill -9 of a real edge, and its restart on the same data directory: the outbox resumes.

To make the kill land when the outbox holds both kinds of unacknowledged frame, the link first
loses its way back (a TCP proxy passes the edge's bytes to the cloud and none of the cloud's back,
tests/e2e/tcpproxy.py) while the camera keeps capturing, with few frames allowed in flight. At the
kill the outbox then holds frames the cloud has stored but whose acks never arrived, and frames
never sent.
What must hold after the restart:

* nothing acked is sent again: the restarted edge sends only what its outbox held, plus new frames;
* nothing unacked is lost: every frame the outbox held reaches the cloud, under its sequence
  number and with its capture time (the same frame, not a new one);
* frames that went out before the kill go again marked ``resent``; those the cloud already had are
  acknowledged as duplicates and stored once; no sequence number is reused.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.conftest import HEIGHT, WIDTH
from tests.e2e.probes import results, sample
from tests.e2e.services import CloudProcess, EdgeProcess, Model, free_port, wait_until
from tests.e2e.tcpproxy import TcpProxy

CAM = "e-1"
TOKEN = "edge-kill-" + "k" * 24
# Frames the edge may have unacknowledged: the rest of a stalled outbox stays unsent. The edge's own
# cap, not the cloud's credits: a credit comes back only after inference, so a camera whose cloud
# infers more slowly than it captures waits with every frame acked and no credit, and a stall then
# would leave nothing in flight. Credits are plenty, so at any moment of the stall the edge may send.
MAX_IN_FLIGHT = 6
CREDITS = 256
NEW_FRAMES = 10  # captured by the restarted edge


@dataclass(frozen=True)
class OutboxSnapshot:
    """The outbox file as a crash left it: {sequence: (capture_time_us, sent_count)} and its counters."""

    frames: dict[int, tuple[int, int]]
    counters: dict[str, int]

    @classmethod
    def read(cls, path: Path) -> OutboxSnapshot:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute("SELECT sequence, capture_time_us, sent_count FROM frames").fetchall()
            counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
        finally:
            db.close()
        return cls({int(s): (int(t), int(n)) for s, t, n in rows}, counters)

    @property
    def sent(self) -> set[int]:
        return {s for s, (_, n) in self.frames.items() if n > 0}

    @property
    def unsent(self) -> set[int]:
        return {s for s, (_, n) in self.frames.items() if n == 0}


def test_kill_9_of_an_edge_resumes_its_outbox_without_loss_or_resending_acked_frames(
    tmp_path: Path, model: Model
) -> None:
    cloud = CloudProcess(
        tmp_path / "cloud", model, {CAM: TOKEN}, {"credits_per_camera": CREDITS, "metrics_port": free_port()}
    )
    metrics = cloud.config["metrics_port"]
    edge: EdgeProcess | None = None
    try:
        cloud.launch()
        with TcpProxy(cloud.target) as proxy:
            edge = EdgeProcess(
                tmp_path / "edge",
                model,
                CAM,
                TOKEN,
                proxy.target,
                "synthetic:5",
                {
                    "source": {"width": WIDTH, "height": HEIGHT, "fps": 8.0, "limit": 1000},
                    "link": {"max_in_flight": MAX_IN_FLIGHT},
                },
            )
            outbox = edge.data_dir / "outbox.sqlite3"
            edge.start(backoff_max_s=1.0)
            cloud.wait_serving()
            results(cloud.target, CAM, 5, timeout=180)
            proxy.stall(up=False)  # frames reach the cloud; acks and credits do not come back

            seen: list[OutboxSnapshot] = []

            def outbox_has_every_kind() -> bool:
                seen.append(OutboxSnapshot.read(outbox))
                # the cap reached with frames in flight
                return len(seen[-1].sent) >= 1 and len(seen[-1].unsent) >= 4

            try:
                wait_until(outbox_has_every_kind, 60, "frames in flight and frames waiting in the outbox")
            except AssertionError:
                every = max(1, len(seen) // 40)
                print(
                    "outbox (sent, unsent) while waiting:",
                    [(len(x.sent), len(x.unsent)) for x in seen[::every]],
                )
                raise
            edge.kill9()
            at_kill = OutboxSnapshot.read(outbox)
            proxy.drop()  # the half-open connection of the dead process goes away
            proxy.pass_()

            edge.config["source"]["limit"] = NEW_FRAMES
            t0 = time.monotonic()
            edge.start(backoff_max_s=1.0)
            run = edge.finish(timeout=180)
            restart_s = time.monotonic() - t0
        last = at_kill.counters["next_sequence"] - 1  # every sequence the first run issued
        total = last + NEW_FRAMES
        got = results(cloud.target, CAM, total, timeout=60)
        after = OutboxSnapshot.read(outbox)
        frames = {
            outcome: int(
                sample(metrics, "layercast_cloud_frames_total", {"camera": CAM, "outcome": outcome}) or 0
            )
            for outcome in ("stored", "duplicate")
        }
    except BaseException:
        print(cloud.describe(), edge.describe() if edge else "", sep="\n")
        raise
    finally:
        if edge is not None:
            edge.cleanup()
        cloud.cleanup()

    s = run.stats
    print(
        f"\nFIGURE edge kill -9: first run issued {last} sequences, acked {last - len(at_kill.frames)}; "
        f"outbox at the kill: {len(at_kill.sent)} sent unacked, {len(at_kill.unsent)} never sent; "
        f"restart delivered them and {NEW_FRAMES} new in {restart_s:.1f}s: sent {s['frames_sent']}, "
        f"resent {s['frames_resent']}, duplicate acks {s['frames_acked_duplicate']}; cloud: {len(got)} "
        f"results for {total} sequences, lost {total - len(got)}, duplicates stored 0 "
        f"(acked as duplicate {frames['duplicate']})"
    )
    assert run.returncode == 0
    # every sequence exactly once, in order; the unacked frames are the very frames of the first run
    assert [r.sequence for r in got] == list(range(1, total + 1))
    by_seq = {r.sequence: r.capture_time_us for r in got}
    assert {seq: by_seq[seq] for seq in at_kill.frames} == {seq: t for seq, (t, _) in at_kill.frames.items()}
    assert all(by_seq[seq] > max(t for t, _ in at_kill.frames.values()) for seq in range(last + 1, total + 1))
    # only the outbox's frames and the new ones were sent: nothing acked before the kill went again
    assert s["frames_captured"] == NEW_FRAMES and s["frames_dropped_outbox"] == 0, s
    assert s["frames_sent"] == len(at_kill.frames) + NEW_FRAMES, s
    assert s["frames_resent"] == len(at_kill.sent), s  # sent before the kill → marked resent
    assert s["sequence_collisions"] == 0 and s["frames_rejected"] == 0, s
    # the cloud stored each frame once; what it already had was acknowledged as a duplicate
    assert frames["stored"] == total
    # a frame the dead edge had handed to gRPC may never have reached the cloud (the kill can beat the
    # flush on a loaded machine): it is then stored as new, not acked as a duplicate; none is lost
    assert s["frames_acked_duplicate"] == frames["duplicate"] <= len(at_kill.sent)
    assert not after.frames and after.counters["next_sequence"] == total + 1
