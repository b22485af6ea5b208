"""The outbox and predicted frames: a P-frame whose reference is dropped is undecodable, so it is
dropped with it (counted), and never sent to a cloud that would have to refuse it."""

from __future__ import annotations

import sqlite3

import pytest

from layercast.edge.outbox import Outbox
from layercast.shared.codec.bitstream import is_predicted


def intra(i: int) -> bytes:
    return b"LC\x05\x01" + f"intra{i}".encode()


def pframe(i: int) -> bytes:
    return b"LC\x05\x03" + f"p{i}".encode()


def outbox(tmp_path, **kw) -> Outbox:
    return Outbox(tmp_path / "o.db", predicted=is_predicted, **kw)


def test_dropping_the_oldest_takes_the_predicted_frames_coded_from_it(tmp_path):
    with outbox(tmp_path, max_frames=4) as ob:
        for i, data in enumerate([intra(1), pframe(2), pframe(3), intra(4)]):
            ob.append(i, data)
        r = ob.append(5, pframe(5))  # room for it: 1 goes, and 2, 3 with it (4 starts a new chain)
        assert r.stored and r.dropped == (1, 2, 3)
        assert ob.sequences() == [4, 5]
        assert [f.base for f in ob.take(10)] == [intra(4), pframe(5)]
        st = ob.stats()
        assert st.dropped_frames == 3
        assert st.drops_by_reason == {"queue_full": 1, "reference_dropped": 2}


def test_a_new_predicted_frame_whose_reference_went_is_dropped_too(tmp_path):
    with outbox(tmp_path, max_frames=3) as ob:
        assert [f.sequence for f in ob.take(1)] == []
        for i, data in enumerate([intra(1), pframe(2), pframe(3)]):
            ob.append(i, data)
        assert [f.sequence for f in ob.take(1)] == [1]  # on the wire: never dropped
        r = ob.append(4, pframe(4))  # 2 goes to make room, 3 depends on it, and 4 on 3
        assert not r.stored and r.dropped == (2, 3, 4)
        assert ob.sequences() == [1]
        # the chain stays broken until an intra frame: a later P-frame is dropped as it comes
        r = ob.append(5, pframe(5))
        assert not r.stored and r.dropped == (5,)
        r = ob.append(6, intra(6))
        assert r.stored and r.dropped == ()
        assert ob.append(7, pframe(7)).stored
        assert ob.sequences() == [1, 6, 7]
        assert ob.stats().drops_by_reason == {"queue_full": 1, "reference_dropped": 3}


def test_a_dropped_new_frame_breaks_the_chain_after_it(tmp_path):
    with outbox(tmp_path, max_bytes=100) as ob:
        ob.append(0, intra(1))
        big = ob.append(1, pframe(2) + b"x" * 200)
        assert not big.stored and big.dropped == (2,)
        assert ob.append(2, pframe(3)).dropped == (3,)
        assert ob.sequences() == [1]
        assert ob.stats().drops_by_reason == {"too_large": 1, "reference_dropped": 1}


def test_discarding_a_frame_takes_its_queued_dependents(tmp_path):
    with outbox(tmp_path) as ob:
        for i, data in enumerate([intra(1), pframe(2), pframe(3), pframe(4), intra(5), pframe(6)]):
            ob.append(i, data)
        assert ob.discard(2, "too_large") == 3
        assert ob.sequences() == [1, 5, 6]
        assert ob.stats().drops_by_reason == {"too_large": 1, "reference_dropped": 2}


def test_a_rolled_back_append_forgets_what_it_dropped(tmp_path):
    with outbox(tmp_path, max_frames=3) as ob:
        ob.append(0, intra(1))
        ob.append(1, pframe(2))

        def fail(_seq: int) -> None:
            raise RuntimeError("enhancement store failed")

        with pytest.raises(RuntimeError):  # the second frame would have dropped 1, and 2 with it
            ob.append_many([(2, intra(3), None), (3, pframe(4), fail)])
        assert ob.sequences() == [1, 2]
        r = ob.append(2, pframe(3))  # same sequence again: 2 was not dropped after all
        assert r.sequence == 3 and r.stored and r.dropped == ()
        assert ob.stats().dropped_frames == 0


def test_an_outbox_from_before_predicted_frames_opens_and_counts_its_frames_as_intra(tmp_path):
    path = tmp_path / "o.db"
    db = sqlite3.connect(path)
    db.executescript(
        """CREATE TABLE frames (sequence INTEGER PRIMARY KEY, capture_time_us INTEGER NOT NULL,
        base BLOB NOT NULL, size INTEGER NOT NULL, sent_count INTEGER NOT NULL DEFAULT 0,
        sealer INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO counters VALUES ('next_sequence', 3);"""
    )
    db.executemany(
        "INSERT INTO frames(sequence, capture_time_us, base, size) VALUES (?, ?, ?, ?)",
        [(1, 0, pframe(1), 5), (2, 1, pframe(2), 5)],
    )
    db.commit()
    db.close()
    with outbox(tmp_path, max_frames=2) as ob:
        r = ob.append(2, pframe(3))  # 1 goes; 2's kind is unknown, so it is kept
        assert r.stored and r.dropped == (1,)
        assert ob.sequences() == [2, 3]
