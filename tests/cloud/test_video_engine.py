"""The engine decodes each camera's P-frames against its live reference, rebuilt from the store
when the process has none (a restart), and refuses one whose reference is nowhere."""

from __future__ import annotations

import threading

import pytest

from layercast.cloud.ingest.engine import InferenceEngine
from layercast.cloud.ingest.frame import Frame
from layercast.cloud.results.sqlite import SqliteStore
from layercast.shared.codec import load_codec
from layercast.shared.codec.bitstream import LayerKind
from layercast.shared.codec.video import VideoEncoder
from layercast.shared.data.synth import SyntheticCamera
from layercast.shared.errors import ReferenceMismatch


@pytest.fixture(scope="module")
def video():
    """The shipped det-tiny coding 8 frames of one camera: I P P P I P P P."""
    codec = load_codec("det-tiny", enhancement=None, device="cpu")
    cam = SyntheticCamera(5, 96, 96)
    enc = VideoEncoder(codec, intra_period=4)
    encoded = [enc.encode(cam.frame(i).image, layers="base") for i in range(8)]
    assert [f.kind for f in encoded] == ([LayerKind.BASE] + [LayerKind.PREDICTED] * 3) * 2
    return codec, [f.base for f in encoded]


def _frame(engine: InferenceEngine, seq: int, base: bytes, camera: str = "cam") -> Frame:
    return Frame(camera, seq, seq, 0, engine.check_base(base))


def _stored(tmp_path, engine_for_check, bases, keep, camera="cam") -> SqliteStore:
    store = SqliteStore(tmp_path / "frames.db")
    for seq in keep:
        store.put_frame(_frame(engine_for_check, seq, bases[seq - 1], camera))
    return store


def test_frame_chain_goes_back_to_the_last_intra_frame(tmp_path, video):
    codec, bases = video
    store = _stored(tmp_path, InferenceEngine(codec), bases, range(1, 9))
    out: list = []
    t = threading.Thread(target=lambda: out.append(store.frame_chain("cam", 7)))  # a worker thread
    t.start()
    t.join()
    assert [seq for seq, _ in out[0]] == [5, 6, 7]
    assert [seq for seq, _ in store.frame_chain("cam", 3)] == [1, 2, 3]
    assert store.frame_chain("cam", 4, limit=2) == []  # no intra frame among the newest two
    assert store.frame_chain("other", 4) == []


def test_predicted_frames_decode_in_order_and_count_by_kind(tmp_path, video):
    codec, bases = video
    engine = InferenceEngine(codec)
    store = _stored(tmp_path, engine, bases, range(1, 9))
    engine = InferenceEngine(codec, load_chain=store.frame_chain)
    for seq, base in enumerate(bases, start=1):
        [res] = engine.run_batch([_frame(engine, seq, base)])
        assert not isinstance(res, BaseException), res
        assert res.sequence == seq and res.base_bytes == len(base)
    assert engine.decoded_by_kind == {"intra": 2, "predicted": 6}
    assert engine.references.rebuilt == 0  # every reference was live


def test_a_restarted_engine_rebuilds_from_the_store_or_refuses(tmp_path, video):
    codec, bases = video
    store = _stored(tmp_path, InferenceEngine(codec), bases, range(1, 7))
    engine = InferenceEngine(codec, load_chain=store.frame_chain)  # nothing live: a new process
    [res] = engine.run_batch([_frame(engine, 7, bases[6])])
    assert not isinstance(res, BaseException), res
    assert engine.references.rebuilt == 1
    # another camera whose frame 2 never reached this cloud: frame 3 is refused, and so is 4
    [res] = engine.run_batch([_frame(engine, 3, bases[2], camera="lost")])
    assert isinstance(res, ReferenceMismatch)
    [res] = engine.run_batch([_frame(engine, 4, bases[3], camera="lost")])
    assert isinstance(res, ReferenceMismatch)
    # its next intra frame decodes, and so does the P-frame after it
    out = engine.run_batch([_frame(engine, 5, bases[4], camera="lost")])
    out += engine.run_batch([_frame(engine, 6, bases[5], camera="lost")])
    assert not any(isinstance(r, BaseException) for r in out)


def test_a_frame_that_fails_drops_the_live_reference(video):
    codec, bases = video
    engine = InferenceEngine(codec)  # no store
    engine.run_batch([_frame(engine, 1, bases[0])])
    assert engine.references.live("cam") is not None
    [res] = engine.run_batch([_frame(engine, 3, bases[2])])  # frame 2 was lost on the way
    assert isinstance(res, ReferenceMismatch)
    assert engine.references.live("cam") is None
