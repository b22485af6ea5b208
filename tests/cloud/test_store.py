"""The SQLite store: idempotent inserts, retention, resume queries, crash recovery."""

from __future__ import annotations

import pytest

from layercast.cloud.results.records import InsertOutcome, ReplayQuery, ResultRecord
from layercast.cloud.results.sqlite import SqliteStore
from layercast.cloud.results.store import STORE_METHODS, AsyncStore
from layercast.shared.rpc import common_pb2
from tests.cloud.conftest import stored_frame


def frame(cam: str, seq: int, received_us: int = 0, base: bytes | None = None):
    data = base if base is not None else f"{cam}:{seq}".encode() * 3
    return stored_frame(cam, seq, data, capture_time_us=seq * 10, received_us=received_us, size=(64, 48))


def result(cam: str, seq: int) -> ResultRecord:
    r = common_pb2.Result(camera_id=cam, sequence=seq, task="detection")
    return ResultRecord(cam, seq, seq, r.SerializeToString())


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "db" / "cloud.db")
    yield s
    s.close()


def test_insert_is_idempotent_by_camera_and_sequence(store):
    assert store.put_frame(frame("a", 1)) is InsertOutcome.NEW
    assert store.put_frame(frame("a", 1, base=b"different")) is InsertOutcome.DUPLICATE
    assert store.get_frame("a", 1).base == b"a:1" * 3  # the first copy is kept
    assert store.put_frame(frame("b", 1)) is InsertOutcome.NEW  # other camera, same sequence
    assert store.put_frame(frame("a", 2)) is InsertOutcome.NEW
    cams = {c.camera_id: c for c in store.list_cameras()}
    assert cams["a"].frames_stored == 2 and cams["a"].last_sequence == 2
    assert cams["b"].frames_stored == 1


def test_sequence_not_after_high_water_mark_is_stale(store):
    store.put_frame(frame("a", 5))
    assert store.put_frame(frame("a", 3)) is InsertOutcome.STALE
    assert store.get_frame("a", 3) is None
    with pytest.raises(ValueError):
        store.put_frame(frame("a", 0))


def test_results_after_resume_points_and_order(store):
    for seq in range(1, 6):
        for cam in ("a", "b"):
            store.put_frame(frame(cam, seq))
            store.put_results([result(cam, seq)])
    store.put_frame(frame("c", 1))
    store.put_results([result("c", 1)])

    got = store.results_after(ReplayQuery(resume_after={"a": 3}, default_after=0))
    pairs = [(r.camera_id, r.sequence) for r in got]
    assert [s for c, s in pairs if c == "a"] == [4, 5]
    assert [s for c, s in pairs if c == "b"] == [1, 2, 3, 4, 5]
    assert [r.cursor for r in got] == sorted(r.cursor for r in got)

    only_b = store.results_after(ReplayQuery(cameras=frozenset({"b"}), default_after=3))
    assert [(r.camera_id, r.sequence) for r in only_b] == [("b", 4), ("b", 5)]
    assert store.results_after(ReplayQuery(cameras=frozenset(), default_after=0)) == []

    # paging by cursor gives the same rows
    page1 = store.results_after(ReplayQuery(limit=4))
    page2 = store.results_after(ReplayQuery(cursor=page1[-1].cursor, limit=100))
    assert [(r.camera_id, r.sequence) for r in page1 + page2] == [
        (r.camera_id, r.sequence) for r in store.results_after(ReplayQuery(limit=100))
    ]
    assert common_pb2.Result.FromString(page1[0].data).camera_id == page1[0].camera_id


def test_result_written_twice_keeps_one_row(store):
    store.put_frame(frame("a", 1))
    c1 = store.put_results([result("a", 1)])
    c2 = store.put_results([result("a", 1)])
    assert c1 == c2
    assert len(store.results_after(ReplayQuery())) == 1


def test_pending_frames_survive_reopen_and_page(tmp_path):
    path = tmp_path / "c.db"
    s = SqliteStore(path)
    for seq in range(1, 8):
        s.put_frame(frame("a", seq))
    s.put_frame(frame("b", 1))
    s.put_results([result("a", 1), result("a", 2)])
    s.mark_rejected("a", 3, 3, "does not decode")
    s.close()  # as if the process died after these commits

    s = SqliteStore(path)
    first = s.pending_frames(limit=3)
    rest = s.pending_frames(limit=100, after=(first[-1].camera_id, first[-1].sequence))
    assert [(f.camera_id, f.sequence) for f in first + rest] == [
        ("a", 4),
        ("a", 5),
        ("a", 6),
        ("a", 7),
        ("b", 1),
    ]
    assert first[0].base == b"a:4" * 3
    assert s.put_frame(frame("a", 4)) is InsertOutcome.DUPLICATE  # still idempotent after restart
    assert [f.sequence for f in s.list_frames("a")] == [
        7,
        6,
        5,
        4,
        2,
        1,
    ]  # rejected frame hidden, newest first
    assert [f.sequence for f in s.list_frames("a", before_sequence=5, limit=2)] == [4, 2]
    s.close()


def test_retention_by_count_and_age_keeps_pending(store):
    for seq in range(1, 11):
        store.put_frame(frame("a", seq, received_us=seq * 1_000_000))
    store.put_results([result("a", s) for s in range(1, 10)])  # frame 10 stays pending
    rep = store.apply_retention(now_us=20_000_000, max_age_s=1e9, max_frames_per_camera=4)
    assert rep.frames_deleted == 6
    assert [f.sequence for f in store.list_frames("a")] == [10, 9, 8, 7]
    assert [r.sequence for r in store.results_after(ReplayQuery())] == [7, 8, 9]
    # age: everything received before t = 9.5 s goes, except the pending frame
    rep = store.apply_retention(now_us=19_500_000, max_age_s=10.0, max_frames_per_camera=100)
    assert [f.sequence for f in store.list_frames("a")] == [10]
    assert store.results_after(ReplayQuery()) == []
    # the high-water mark survives retention, so an old resend is recognised as stale
    assert store.get_camera("a").last_sequence == 10
    assert store.put_frame(frame("a", 8)) is InsertOutcome.STALE


async def test_async_store_runs_every_protocol_method_on_its_thread_and_nothing_else(tmp_path):
    s = AsyncStore(SqliteStore(tmp_path / "cloud.db"))
    try:
        assert STORE_METHODS >= {"put_frame", "results_after", "pending_frames", "apply_retention"}
        assert await s.put_frame(frame("a", 1)) is InsertOutcome.NEW
        await s.put_results([result("a", 1)])
        assert [r.sequence for r in await s.results_after(ReplayQuery())] == [1]
        with pytest.raises(AttributeError):
            getattr(s, "_tx")  # noqa: B009  (the backend's internals are not reachable)
        with pytest.raises(AttributeError):
            getattr(s, "last_cursor")  # noqa: B009  (nor what the protocol does not list)
    finally:
        await s.close()
