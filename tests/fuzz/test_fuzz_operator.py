"""Fuzz the Operator API (ListCameras, ListFrames, GetPreview, Enhance) against a real server.

The server first stores known frames: camera ``fz-op`` stays connected through a fake camera that
answers each enhancement request the way the case says (the right layer; expired, not found or
store error; another frame's layer; the base layer; damaged or random bytes; nothing at all; an
answer for the wrong sequence or with an unknown request id; twice), camera ``fz-off`` went
offline, and one frame of ``fz-op`` was stored but failed to decode. Requests carry random camera
ids, sequences over the whole uint64 range and random limits, or are damaged on the wire.

Each answer is checked exactly against what is stored: the frames listed (order, bounds, limit),
the preview's size, the enhancement outcome for the camera's answer.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import example
from hypothesis import strategies as st
from PIL import Image

from layercast.cloud.results.records import MAX_SEQUENCE
from layercast.shared.codec import bitstream
from layercast.shared.rpc import edge_pb2, operator_pb2
from tests.fuzz.clients import (
    ENHANCE,
    GET_PREVIEW,
    LIST_CAMERAS,
    LIST_FRAMES,
    Camera,
    finish,
    frame,
    store_frames,
    wait_for_results,
)
from tests.fuzz.harness import (
    MAX_MESSAGE,
    FuzzServer,
    Outcome,
    Tally,
    nightly_cases,
    nightly_timeout,
    run_fuzz,
    unary,
)
from tests.fuzz.strategies import (
    Samples,
    forge_payload,
    mutate_bytes,
    texts,
    u32s,
    u64s,
    weighted,
    wire_mutations,
)

DEFAULT_CASES = 40
S = grpc.StatusCode
ONLINE, OFFLINE = "fz-op", "fz-off"
#: Frames stored per camera (sequence → index into samples.frames); ONLINE's BROKEN one failed to decode.
STORED = {ONLINE: {s: s % 8 for s in [*range(1, 11), 12]}, OFFLINE: {1: 3, 2: 4, 3: 5}}
BROKEN = 11
MAX_LIST = 500  # limits.max_list_frames (default)
DEFAULT_LIST = 100


@pytest.fixture(scope="module")
def camera(fuzz_server: FuzzServer, samples: Samples) -> Camera:
    """ONLINE, connected for the whole module; OFFLINE's frames stored, then it disconnected."""
    bases = {cam: {s: samples.frames[i].base for s, i in frames.items()} for cam, frames in STORED.items()}

    async def seed() -> Camera:
        off = await store_frames(fuzz_server.channel, OFFLINE, bases[OFFLINE], samples.model_id)
        assert await off.close() == grpc.StatusCode.OK
        cam = await store_frames(
            fuzz_server.channel, ONLINE, {s: bases[ONLINE][s] for s in range(1, 11)}, samples.model_id
        )
        garbage = bytes(range(256)) * 2
        cam.send(frame(BROKEN, forge_payload(samples.frames[0].base, garbage)))  # decoding alone fails
        cam.send(frame(12, bases[ONLINE][12]))
        answers = [await cam.acks.get() for _ in range(3)]  # Ack 11, Ack 12, then 11 rejected after decoding
        kinds = sorted((m.WhichOneof("kind"), getattr(m, m.WhichOneof("kind")).sequence) for m in answers)
        assert kinds == [("ack", BROKEN), ("ack", 12), ("rejected", BROKEN)], answers
        await wait_for_results(fuzz_server.channel, {cam_id: list(f) for cam_id, f in STORED.items()})
        return cam

    return fuzz_server.run(seed(), timeout=180)


def _payloads(requests: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    serialized = requests.map(lambda r: r.SerializeToString())
    return weighted((10, serialized), (2, serialized.flatmap(wire_mutations)), (1, st.binary(max_size=120)))


KNOWN = [ONLINE, OFFLINE, "fz-0"]
sequences = st.one_of(st.integers(0, 14), u64s)
frame_refs = weighted(
    (
        2,
        st.builds(
            operator_pb2.FrameRef, camera_id=st.sampled_from([ONLINE, OFFLINE]), sequence=st.integers(0, 14)
        ),
    ),
    (1, st.builds(operator_pb2.FrameRef, camera_id=texts(KNOWN), sequence=sequences)),
)


def _parse(message_type: type, payload: bytes) -> object | None:
    try:
        return message_type.FromString(payload)
    except DecodeError:
        return None


def _png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return im.size


def _size(samples: Samples, cam: str, seq: int) -> tuple[int, int]:
    h = bitstream.parse_header(samples.frames[STORED[cam][seq]].base)
    return h.width, h.height


def _stored(cam: str, seq: int) -> bool:
    return seq in STORED.get(cam, {})


# -- expectations per RPC ----------------------------------------------------------------------------------


def check_list_cameras(
    samples: Samples, tally: Tally, out: Outcome, req: operator_pb2.ListCamerasRequest
) -> None:
    tally.check(out, {S.OK})
    cams = {c.camera_id: c for c in operator_pb2.ListCamerasResponse.FromString(out.responses[0]).cameras}
    assert cams[ONLINE].online and not cams[OFFLINE].online, cams
    assert (cams[ONLINE].last_sequence, cams[ONLINE].frames_stored) == (12, len(STORED[ONLINE])), cams[ONLINE]
    assert (cams[OFFLINE].last_sequence, cams[OFFLINE].frames_stored) == (3, 3), cams[OFFLINE]
    assert all(c.base_model_id == samples.model_id and c.task == "detection" for c in cams.values())


def check_list_frames(
    samples: Samples, tally: Tally, out: Outcome, req: operator_pb2.ListFramesRequest
) -> None:
    tally.check(out, {S.OK})
    got = operator_pb2.ListFramesResponse.FromString(out.responses[0]).frames
    before = req.before_sequence if req.before_sequence <= MAX_SEQUENCE else 0
    limit = min(req.limit or DEFAULT_LIST, MAX_LIST)
    want = sorted((s for s in STORED.get(req.camera_id, {}) if not before or s < before), reverse=True)[
        :limit
    ]
    assert [f.sequence for f in got] == want, (req, [f.sequence for f in got])
    for f in got:
        assert (f.width, f.height) == _size(samples, req.camera_id, f.sequence) and f.base_bytes > 0, f


def check_preview(samples: Samples, tally: Tally, out: Outcome, req: operator_pb2.FrameRef) -> None:
    if _stored(req.camera_id, req.sequence):
        tally.check(out, {S.OK})
        img = operator_pb2.Image.FromString(out.responses[0])
        size = _size(samples, req.camera_id, req.sequence)
        assert (img.width, img.height) == size == _png_size(img.png), (img.width, img.height, size)
    else:
        tally.check(out, {S.NOT_FOUND})


#: Fake-camera answers → the status Enhance must end with.
ENHANCE_MODES: dict[str, set[grpc.StatusCode]] = {
    "valid": {S.OK},
    "twice": {S.OK},
    "expired": {S.NOT_FOUND},
    "not_found": {S.NOT_FOUND},
    "wrong_sequence": {S.NOT_FOUND},
    "store_error": {S.UNAVAILABLE},
    "unspecified": {S.UNAVAILABLE},
    "unknown_reason": {S.UNAVAILABLE},
    "other_frame": {S.INVALID_ARGUMENT},
    "base_instead": {S.INVALID_ARGUMENT},
    "random": {S.INVALID_ARGUMENT},
    "empty": {S.INVALID_ARGUMENT},
    "damaged": {S.OK, S.INVALID_ARGUMENT, S.DATA_LOSS, S.FAILED_PRECONDITION},
    "silent": {S.DEADLINE_EXCEEDED},
    "unknown_id": {S.DEADLINE_EXCEEDED},
}


def responder(samples: Samples, mode: str, seed: int) -> Callable[[edge_pb2.EnhancementRequest], list[bytes]]:
    """How the fake camera answers an enhancement request in ``mode``."""
    reasons = edge_pb2.EnhancementUnavailable

    def answer(req: edge_pb2.EnhancementRequest) -> list[bytes]:
        index = STORED[ONLINE].get(req.sequence, 0)
        enh = samples.frames[index].enhancement or b""

        def reply(request_id: str = req.request_id, sequence: int = req.sequence, **kind: object) -> bytes:
            response = edge_pb2.EnhancementResponse(request_id=request_id, sequence=sequence, **kind)
            return edge_pb2.EdgeMessage(enhancement=response).SerializeToString()

        def unavailable(reason: int) -> bytes:
            return reply(unavailable=edge_pb2.EnhancementUnavailable(reason=reason, message=f"fuzz {mode}"))

        return {
            "valid": lambda: [reply(enhancement=enh)],
            "twice": lambda: [reply(enhancement=enh), reply(enhancement=b"late and wrong")],
            "expired": lambda: [unavailable(reasons.EXPIRED)],
            "not_found": lambda: [unavailable(reasons.NOT_FOUND)],
            "wrong_sequence": lambda: [reply(sequence=req.sequence + 1, enhancement=enh)],
            "store_error": lambda: [unavailable(reasons.STORE_ERROR)],
            "unspecified": lambda: [unavailable(reasons.REASON_UNSPECIFIED)],
            "unknown_reason": lambda: [unavailable(1000 + seed % 1000)],
            "other_frame": lambda: [reply(enhancement=samples.frames[(index + 1) % 8].enhancement or b"")],
            "base_instead": lambda: [reply(enhancement=samples.frames[index].base)],
            "random": lambda: [reply(enhancement=seed.to_bytes(8, "big") * 3)],
            "empty": lambda: [reply(enhancement=b"")],
            "damaged": lambda: [reply(enhancement=mutate_bytes(enh, seed))],
            "silent": lambda: [],
            "unknown_id": lambda: [reply(request_id=f"not-{req.request_id}", enhancement=enh)],
        }[mode]()

    return answer


def check_enhance(
    samples: Samples, tally: Tally, out: Outcome, req: operator_pb2.EnhanceRequest, mode: str
) -> None:
    cam, seq = req.frame.camera_id, req.frame.sequence
    if not _stored(cam, seq):
        tally.check(out, {S.NOT_FOUND}, what=f"unknown frame {cam!r}/{seq}")
        return
    if cam == OFFLINE:
        tally.check(out, {S.UNAVAILABLE}, what="offline camera")
        return
    tally.check(out, ENHANCE_MODES[mode], what=f"camera answers {mode}")
    if out.code is S.OK:
        resp = operator_pb2.EnhanceResponse.FromString(out.responses[0])
        size = _size(samples, cam, seq)
        assert (
            (resp.reconstruction.width, resp.reconstruction.height)
            == size
            == _png_size(resp.reconstruction.png)
        )
        assert resp.base_bytes > 0 and resp.enhancement_bytes > 0 and not resp.cached, resp
        assert resp.result.sequence == seq and resp.result.camera_id == cam, resp.result


def _enhance(camera: str, sequence: int) -> operator_pb2.EnhanceRequest:
    return operator_pb2.EnhanceRequest(frame=operator_pb2.FrameRef(camera_id=camera, sequence=sequence))


RPCS = {
    "ListCameras": (
        LIST_CAMERAS,
        operator_pb2.ListCamerasRequest,
        st.just(operator_pb2.ListCamerasRequest()),
    ),
    "ListFrames": (
        LIST_FRAMES,
        operator_pb2.ListFramesRequest,
        st.builds(
            operator_pb2.ListFramesRequest, camera_id=texts(KNOWN), before_sequence=sequences, limit=u32s
        ),
    ),
    "GetPreview": (GET_PREVIEW, operator_pb2.FrameRef, frame_refs),
    "Enhance": (
        ENHANCE,
        operator_pb2.EnhanceRequest,
        st.one_of(
            st.builds(operator_pb2.EnhanceRequest, frame=frame_refs),
            st.builds(
                lambda s: operator_pb2.EnhanceRequest(
                    frame=operator_pb2.FrameRef(camera_id=ONLINE, sequence=s)
                ),
                st.sampled_from(sorted(STORED[ONLINE])),
            ),
            st.just(operator_pb2.EnhanceRequest()),
        ),
    ),
}
#: Explicit cases run first in every run: each RPC's success path and the Enhance outcomes.
EXAMPLES: dict[str, list[tuple[object, str]]] = {
    "ListCameras": [(operator_pb2.ListCamerasRequest(), "")],
    "ListFrames": [(operator_pb2.ListFramesRequest(camera_id=ONLINE, before_sequence=12, limit=4), "")],
    "GetPreview": [(operator_pb2.FrameRef(camera_id=ONLINE, sequence=3), "")],
    "Enhance": [
        (_enhance(ONLINE, s), mode) for s, mode in enumerate(ENHANCE_MODES, start=1) if s in STORED[ONLINE]
    ],
}


def _examples(rpc: str) -> Callable:
    def add(test: Callable) -> Callable:
        for req, mode in EXAMPLES[rpc]:
            test = example(payload=req.SerializeToString(), mode=mode, seed=7)(test)
        return test

    return add


CHECKS = {"ListCameras": check_list_cameras, "ListFrames": check_list_frames, "GetPreview": check_preview}


def run_operator_fuzz(
    fz: FuzzServer, samples: Samples, cam: Camera, rpc: str, cases_n: int, *, nightly: bool
) -> dict:
    method, message_type, requests = RPCS[rpc]
    tally = Tally(f"Operator.{rpc}")
    modes = st.sampled_from(list(ENHANCE_MODES)) if rpc == "Enhance" else st.just("")

    @_examples(rpc)
    def one(payload: bytes, mode: str, seed: int) -> None:
        req = _parse(message_type, payload)
        if rpc == "Enhance":
            cam.answer = responder(samples, mode, seed)
        out = fz.run(unary(fz.channel, method, payload), timeout=60)
        if len(payload) > MAX_MESSAGE:
            tally.check(out, {S.RESOURCE_EXHAUSTED}, what="(message above the limit)")
        elif req is None:
            tally.check(out, {S.INVALID_ARGUMENT}, what="(undecodable request)")
        elif rpc == "Enhance":
            check_enhance(samples, tally, out, req, mode)
        else:
            CHECKS[rpc](samples, tally, out, req)

    run_fuzz(
        one, cases_n, nightly=nightly, payload=_payloads(requests), mode=modes, seed=st.integers(0, 1 << 32)
    )
    stats = finish(fz, samples, tally)
    assert tally.counts["OK"] > 0, stats
    return stats


@pytest.mark.parametrize("rpc", list(RPCS))
def test_fuzz_operator(fuzz_server: FuzzServer, samples: Samples, camera: Camera, rpc: str) -> None:
    run_operator_fuzz(fuzz_server, samples, camera, rpc, DEFAULT_CASES, nightly=False)


@pytest.mark.nightly
@pytest.mark.timeout(nightly_timeout())
@pytest.mark.parametrize("rpc", list(RPCS))
def test_fuzz_operator_nightly(fuzz_server: FuzzServer, samples: Samples, camera: Camera, rpc: str) -> None:
    run_operator_fuzz(fuzz_server, samples, camera, rpc, nightly_cases(), nightly=True)
