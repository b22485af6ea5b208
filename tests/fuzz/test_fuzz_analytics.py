"""Fuzz Analytics.Subscribe and Analytics.Infer against a real server.

Subscribe: the server first stores a known set of results (three cameras), so every request has
an exact expected replay: random camera filters (known, unknown, odd, many), resume maps with any
uint64, any ``from_sequence``, ``live_only``. The replay must be exactly the stored results the
request selects, in sequence order per camera, then nothing (the subscription stays open, live).
Requests damaged on the wire, or naming more cameras than a subscription may, end with
INVALID_ARGUMENT; requests above the message limit with RESOURCE_EXHAUSTED.

Infer: images (PNG and JPEG in several modes, other formats the API does not take, damaged,
claiming 100000x100000, above the pixel limit, random) and base bitstreams (valid, mutated, forged, of another model, oversize),
an empty request, damaged bytes, an oversize message. A valid input gives its result; the rest a
clear status.
"""

from __future__ import annotations

import io

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import strategies as st
from PIL import Image

from layercast.cloud.config import LimitsConfig
from layercast.cloud.rpc.servicers.analytics import MAX_SUBSCRIBE_CAMERAS
from layercast.shared.codec import bitstream
from layercast.shared.rpc import analytics_pb2
from tests.fuzz.clients import INFER, SUBSCRIBE, finish, store_frames, wait_for_results
from tests.fuzz.harness import (
    LIMITS,
    MAX_MESSAGE,
    FuzzServer,
    Tally,
    nightly_cases,
    nightly_timeout,
    run_fuzz,
    server_stream,
    unary,
)
from tests.fuzz.strategies import (
    Samples,
    bitstreams,
    images,
    texts,
    u64s,
    weighted,
    wire_mutations,
)

DEFAULT_CASES = 60
S = grpc.StatusCode
#: Results stored before the Subscribe fuzz: camera → sequences.
STORED = {"fz-0": list(range(1, 13)), "fz-1": [1, 2, 3, 5, 8], "fz-2": [7, 9, 1000]}
KNOWN = [*STORED, "fz-3", "fz-op"]


@pytest.fixture(scope="module")
def stored(fuzz_server: FuzzServer, samples: Samples) -> dict[str, list[int]]:
    async def seed() -> None:
        for cam, seqs in STORED.items():
            bases = {s: samples.bases[s % len(samples.bases)] for s in seqs}
            await (await store_frames(fuzz_server.channel, cam, bases, samples.model_id)).close()
        await wait_for_results(fuzz_server.channel, STORED)

    fuzz_server.run(seed(), timeout=180)
    return STORED


# -- Subscribe -----------------------------------------------------------------------------------------


def _many(keys: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    """Usually a few, rarely thousands (a filter far larger than any deployment's camera count)."""
    return weighted((20, st.lists(keys, max_size=6)), (1, st.integers(2000, 20_000).map(_names)))


def _names(n: int) -> list[str]:
    return [f"c{i}" for i in range(n)]


subscribe_requests = st.builds(
    analytics_pb2.SubscribeRequest,
    camera_ids=_many(texts(KNOWN)),
    resume_after=weighted(
        (20, st.dictionaries(texts(KNOWN), u64s, max_size=6)),
        (1, st.integers(2000, 20_000).map(lambda n: dict.fromkeys(_names(n), 3))),
    ),
    from_sequence=u64s,
    live_only=weighted((4, st.just(False)), (1, st.just(True))),
)
subscribe_payloads = weighted(
    (8, subscribe_requests.map(lambda r: r.SerializeToString())),
    (2, subscribe_requests.map(lambda r: r.SerializeToString()).flatmap(wire_mutations)),
    (1, st.binary(max_size=200)),
)


def expected_replay(req: analytics_pb2.SubscribeRequest) -> dict[str, list[int]]:
    """What a subscription replays from the stored results (per camera, in order)."""
    if req.live_only:
        return {}
    cams = set(req.camera_ids) or set(STORED)
    out = {}
    for cam, seqs in STORED.items():
        if cam in cams:
            after = req.resume_after[cam] if cam in req.resume_after else max(req.from_sequence - 1, 0)
            if picked := [s for s in seqs if s > after]:
                out[cam] = picked
    return out


#: Longest camera id a Subscribe may name (the fuzz server keeps the default).
MAX_ID_LENGTH = LimitsConfig().max_id_length


def run_subscribe_fuzz(fz: FuzzServer, samples: Samples, cases_n: int, *, nightly: bool) -> dict:
    tally = Tally("Analytics.Subscribe")

    def one(payload: bytes) -> None:
        if len(payload) > MAX_MESSAGE:
            out = fz.run(server_stream(fz.channel, SUBSCRIBE, payload, expect=0, quiet_s=5.0))
            tally.check(out, {S.RESOURCE_EXHAUSTED}, what="(message above the limit)")
            return
        try:
            req = analytics_pb2.SubscribeRequest.FromString(payload)
        except DecodeError:
            out = fz.run(server_stream(fz.channel, SUBSCRIBE, payload, expect=0, quiet_s=5.0))
            tally.check(out, {S.INVALID_ARGUMENT}, what="(undecodable request)")
            return
        if max(len(req.camera_ids), len(req.resume_after)) > MAX_SUBSCRIBE_CAMERAS:
            out = fz.run(server_stream(fz.channel, SUBSCRIBE, payload, expect=0, quiet_s=5.0))
            tally.check(out, {S.INVALID_ARGUMENT}, what="(too many cameras)")
            assert not out.responses and str(MAX_SUBSCRIBE_CAMERAS) in out.details, out
            return
        if any(len(c) > MAX_ID_LENGTH for c in (*req.camera_ids, *req.resume_after)):
            out = fz.run(server_stream(fz.channel, SUBSCRIBE, payload, expect=0, quiet_s=5.0))
            tally.check(out, {S.INVALID_ARGUMENT}, what="(camera id too long)")
            assert not out.responses and "limits.max_id_length" in out.details, out
            return
        want = expected_replay(req)
        n = sum(len(v) for v in want.values())
        out = fz.run(server_stream(fz.channel, SUBSCRIBE, payload, expect=n, quiet_s=0.02), timeout=60)
        tally.check(out, {None})
        got: dict[str, list[int]] = {}
        for raw in out.responses:
            event = analytics_pb2.SubscribeEvent.FromString(raw)
            assert event.WhichOneof("kind") == "result", event
            got.setdefault(event.result.camera_id, []).append(event.result.sequence)
        assert got == want, f"replay {got}, expected {want}"

    run_fuzz(one, cases_n, nightly=nightly, payload=subscribe_payloads)
    stats = finish(fz, samples, tally)
    assert tally.counts["OPEN"] > 0, stats
    return stats


def test_fuzz_subscribe(fuzz_server: FuzzServer, samples: Samples, stored: dict) -> None:
    run_subscribe_fuzz(fuzz_server, samples, DEFAULT_CASES, nightly=False)


@pytest.mark.nightly
@pytest.mark.timeout(nightly_timeout())
def test_fuzz_subscribe_nightly(fuzz_server: FuzzServer, samples: Samples, stored: dict) -> None:
    run_subscribe_fuzz(fuzz_server, samples, nightly_cases(), nightly=True)


# -- Infer ---------------------------------------------------------------------------------------------


class Oversize:
    def __repr__(self) -> str:
        return "Oversize()"


def infer_cases(samples: Samples) -> st.SearchStrategy:
    """(how, InferRequest) pairs, raw damaged bytes, or an oversize message."""
    image = st.builds(
        lambda im, cam: (f"image:{im[0]}", analytics_pb2.InferRequest(image=im[1], camera_id=cam)),
        images(samples),
        texts(),
    )
    base = st.builds(
        lambda b, cam: (f"base:{b.how}", analytics_pb2.InferRequest(base=b.data, camera_id=cam)),
        bitstreams(samples, oversize=LIMITS["limits.max_frame_bytes"]),
        texts(),
    )
    neither = texts().map(lambda cam: ("neither", analytics_pb2.InferRequest(camera_id=cam)))
    damaged = st.one_of(image, base).map(lambda c: c[1].SerializeToString()).flatmap(wire_mutations)
    return weighted((6, image), (6, base), (1, neither), (2, damaged), (1, st.just(Oversize())))


def _image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def run_infer_fuzz(fz: FuzzServer, samples: Samples, cases_n: int, *, nightly: bool) -> dict:
    tally = Tally("Analytics.Infer")
    refusals = {S.INVALID_ARGUMENT, S.RESOURCE_EXHAUSTED, S.FAILED_PRECONDITION, S.DATA_LOSS}

    def one(case: object) -> None:
        if isinstance(case, Oversize):
            out = fz.run(unary(fz.channel, INFER, bytes(MAX_MESSAGE + 1)))
            tally.check(out, {S.RESOURCE_EXHAUSTED}, what="(oversize message)")
            return
        if isinstance(case, bytes):
            out = fz.run(unary(fz.channel, INFER, case))
            if len(case) > MAX_MESSAGE:
                tally.check(out, {S.RESOURCE_EXHAUSTED}, what="(message above the limit)")
                return
            try:
                analytics_pb2.InferRequest.FromString(case)
            except DecodeError:
                tally.check(out, {S.INVALID_ARGUMENT}, what="(undecodable request)")
                return
            tally.check(out, {S.OK, *refusals}, what="(damaged request)")
            return
        how, req = case
        out = fz.run(unary(fz.channel, INFER, req.SerializeToString()), timeout=60)
        if how in ("base:valid", "image:valid"):
            tally.check(out, {S.OK}, what=how)
            result = analytics_pb2.InferResponse.FromString(out.responses[0]).result
            if how == "base:valid":
                header = bitstream.parse_header(req.base)
                size = (header.width, header.height)
            else:
                size = _image_size(req.image)
            assert (result.width, result.height) == size and result.camera_id == req.camera_id, result
            assert result.model_id == samples.model_id and result.task == "detection"
        elif how in ("image:claim_huge", "image:over_limit", "base:huge_claim"):
            tally.check(out, {S.RESOURCE_EXHAUSTED, S.INVALID_ARGUMENT}, what=how)
            assert out.seconds < 5.0, f"{how} took {out.seconds:.1f} s to refuse"
        elif how in ("neither", "image:other_format"):
            tally.check(out, {S.INVALID_ARGUMENT}, what=how)
        else:
            tally.check(out, {S.OK, *refusals}, what=how)

    run_fuzz(one, cases_n, nightly=nightly, case=infer_cases(samples))
    stats = finish(fz, samples, tally)
    assert tally.counts["OK"] > 0 and tally.counts["INVALID_ARGUMENT"] > 0, stats
    return stats


def test_fuzz_infer(fuzz_server: FuzzServer, samples: Samples) -> None:
    run_infer_fuzz(fuzz_server, samples, DEFAULT_CASES, nightly=False)


@pytest.mark.nightly
@pytest.mark.timeout(nightly_timeout())
def test_fuzz_infer_nightly(fuzz_server: FuzzServer, samples: Samples) -> None:
    run_infer_fuzz(fuzz_server, samples, nightly_cases(), nightly=True)
