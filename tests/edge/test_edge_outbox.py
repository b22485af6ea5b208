"""The outbox: persistence, order, bounds and the drop-oldest policy, in-flight bookkeeping."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from layercast.edge.outbox import Outbox


def frame(i: int, size: int = 10) -> bytes:
    return (f"f{i}:".encode() * size)[:size]


def test_sequences_persist_and_never_repeat(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as ob:
        seqs = [ob.append(1000 + i, frame(i)).sequence for i in range(5)]
        ob.ack([1, 2, 3, 4, 5])
        assert len(ob) == 0
    assert seqs == [1, 2, 3, 4, 5]
    with Outbox(path) as ob:  # empty outbox after a restart: sequences still go on
        assert ob.next_sequence == 6
        assert ob.append(2000, frame(6)).sequence == 6
        assert ob.stats().acked_frames == 5


def test_frames_survive_reopen_in_order_with_sent_counts(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as ob:
        for i in range(6):
            ob.append(100 + i, frame(i, 20 + i))
        sent = ob.take(3)
        assert [f.sequence for f in sent] == [1, 2, 3]
        assert not any(f.resent for f in sent)
        ob.ack(2)
    with Outbox(path) as ob:
        assert ob.in_flight == 0  # in flight is per stream, not persisted
        frames = ob.take(10)
        assert [f.sequence for f in frames] == [1, 3, 4, 5, 6]
        assert [f.resent for f in frames] == [True, True, False, False, False]
        assert frames[0].base == frame(0, 20) and frames[0].capture_time_us == 100
        assert frames[-1].base == frame(5, 25)


def test_take_respects_in_flight_and_reset_resends_everything_unacked_in_order(tmp_path):
    with Outbox(tmp_path / "o.db") as ob:
        for i in range(8):
            ob.append(i, frame(i))
        assert [f.sequence for f in ob.take(3)] == [1, 2, 3]
        assert [f.sequence for f in ob.take(2)] == [4, 5]
        assert ob.in_flight == 5
        ob.ack([1, 3])
        assert ob.in_flight == 3
        assert [f.sequence for f in ob.take(10)] == [6, 7, 8]
        assert ob.take(10) == []
        ob.reset_in_flight()  # reconnect
        again = ob.take(10)
        assert [f.sequence for f in again] == [2, 4, 5, 6, 7, 8]
        assert all(f.resent for f in again)
        assert [f.sent_count for f in again] == [1, 1, 1, 1, 1, 1]


def test_drop_oldest_unsent_when_full_by_frames_and_counted(tmp_path):
    path = tmp_path / "o.db"
    with Outbox(path, max_frames=4) as ob:
        for i in range(4):
            ob.append(i, frame(i))
        in_flight = ob.take(2)  # 1 and 2 are on the wire: the policy must not drop them
        assert [f.sequence for f in in_flight] == [1, 2]
        r = ob.append(4, frame(4))
        assert r.sequence == 5 and r.stored and r.dropped == (3,)
        r = ob.append(5, frame(5))
        assert r.dropped == (4,)
        assert ob.sequences() == [1, 2, 5, 6]
        st = ob.stats()
        assert st.dropped_frames == 2 and st.dropped_bytes == 20
        assert st.drops_by_reason == {"queue_full": 2}
    with Outbox(path, max_frames=4) as ob:  # the drop counter is persistent too
        assert ob.stats().dropped_frames == 2
        assert ob.stats().queued_frames == 4


def test_drop_oldest_by_bytes_may_take_several(tmp_path):
    with Outbox(tmp_path / "o.db", max_bytes=100) as ob:
        for i in range(4):
            ob.append(i, frame(i, 25))  # 100 bytes: exactly full
        r = ob.append(9, frame(9, 60))
        assert r.stored and r.dropped == (1, 2, 3)
        assert ob.sequences() == [4, 5]
        assert ob.stats().queued_bytes == 85
        assert ob.stats().dropped_bytes == 75


def test_new_frame_dropped_when_it_cannot_fit(tmp_path):
    with Outbox(tmp_path / "o.db", max_frames=2, max_bytes=1000) as ob:
        too_big = ob.append(0, b"x" * 1001)
        assert too_big.sequence == 1 and not too_big.stored and too_big.dropped == (1,)
        ob.append(1, frame(1))
        ob.append(2, frame(2))
        ob.take(2)  # everything in flight: nothing can be dropped to make room
        r = ob.append(3, frame(3))
        assert not r.stored and r.dropped == (r.sequence,)
        assert ob.sequences() == [2, 3]
        st = ob.stats()
        assert st.dropped_frames == 2
        assert st.drops_by_reason == {"too_large": 1, "queue_full": 1}
        assert st.next_sequence == 5  # dropped frames used their sequence numbers


def test_reject_and_discard_leave_for_good_and_are_counted(tmp_path):
    path = tmp_path / "o.db"
    with Outbox(path) as ob:
        for i in range(4):
            ob.append(i, frame(i))
        ob.take(4)
        assert ob.reject(2) == 1
        assert ob.discard([3], "too_large") == 1
        assert ob.reject(2) == 0  # already gone
        ob.reset_in_flight()
        assert [f.sequence for f in ob.take(10)] == [1, 4]
        st = ob.stats()
        assert st.rejected_frames == 1 and st.dropped_frames == 1 and st.in_flight == 2
    with pytest.raises(ValueError):
        Outbox(path).record_drops("no-such-reason")


def test_advance_sequence_only_moves_forward(tmp_path):
    with Outbox(tmp_path / "o.db") as ob:
        ob.append(0, frame(0))
        assert ob.advance_sequence(50)
        assert not ob.advance_sequence(10)
        assert ob.append(1, frame(1)).sequence == 50


def test_before_commit_hook_sees_the_sequence_and_can_abort(tmp_path):
    seen: list[int] = []
    with Outbox(tmp_path / "o.db") as ob:
        ob.append(0, frame(0), before_commit=seen.append)

        def fail(seq: int) -> None:
            raise RuntimeError("hook failed")

        with pytest.raises(RuntimeError):
            ob.append(1, frame(1), before_commit=fail)
        assert ob.append(2, frame(2), before_commit=seen.append).sequence == 2
        assert seen == [1, 2]
        assert ob.sequences() == [1, 2] and len(ob) == 2


def test_durable_settings(tmp_path):
    path = tmp_path / "o.db"
    Outbox(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_survives_kill_9_mid_stream(tmp_path):
    """A child process appends and acks, then SIGKILLs itself; nothing committed is lost."""
    path = tmp_path / "o.db"
    script = textwrap.dedent(
        f"""
        import os, signal
        from layercast.edge.outbox import Outbox
        ob = Outbox({str(path)!r})
        for i in range(50):
            ob.append(i, b"frame-%d" % i)
        ob.take(10)
        ob.ack(range(1, 6))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    with Outbox(path) as ob:
        assert ob.sequences() == list(range(6, 51))
        frames = ob.take(100)
        assert frames[0].base == b"frame-5" and frames[0].resent  # 6..10 had been sent
        assert [f.resent for f in frames[:6]] == [True] * 5 + [False]
        assert ob.next_sequence == 51
    assert not os.path.exists(str(path) + "-journal")
