"""Raw bytes as the serialized request of every method the server hosts (layercast services,
health, reflection, and a method that does not exist), bypassing the stubs' serializers.

This is what reaches grpc's deserializer: random bytes, valid requests damaged on the wire
(bad UTF-8 in a string field, a runaway varint, a wrong wire type, a length past the end),
nothing at all. Bytes that do not parse must end with INVALID_ARGUMENT naming the message
type, never UNKNOWN; bytes that parse get the method's ordinary answer.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from hypothesis import strategies as st

from layercast.shared.rpc import analytics_pb2, edge_pb2, operator_pb2
from tests.fuzz.clients import (
    CONNECT,
    ENHANCE,
    GET_PREVIEW,
    HEALTH_CHECK,
    INFER,
    LIST_CAMERAS,
    LIST_FRAMES,
    REFLECTION,
    SUBSCRIBE,
    finish,
)
from tests.fuzz.harness import (
    MAX_MESSAGE,
    FuzzServer,
    Outcome,
    Tally,
    bidi,
    nightly_cases,
    nightly_timeout,
    run_fuzz,
    server_stream,
    unary,
)
from tests.fuzz.strategies import Samples, texts, weighted, wire_mutations

DEFAULT_CASES = 80
S = grpc.StatusCode
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
MISSING = "/layercast.v1.Operator/NoSuchMethod"

#: method → (request type, how it is called, statuses a request that parses may end with, a valid request).
METHODS: dict[str, tuple[type[Message] | None, str, set[grpc.StatusCode | None], Message | None]] = {
    CONNECT: (
        edge_pb2.EdgeMessage,
        "bidi",
        {S.UNAUTHENTICATED, S.PERMISSION_DENIED, S.FAILED_PRECONDITION, S.OK},
        edge_pb2.EdgeMessage(hello=edge_pb2.Hello(camera_id="fz-0", token="t")),
    ),
    SUBSCRIBE: (
        analytics_pb2.SubscribeRequest,
        "stream",
        {None},
        analytics_pb2.SubscribeRequest(camera_ids=["fz-0"], from_sequence=3),
    ),
    INFER: (
        analytics_pb2.InferRequest,
        "unary",
        {S.OK, S.INVALID_ARGUMENT, S.RESOURCE_EXHAUSTED, S.FAILED_PRECONDITION, S.DATA_LOSS},
        analytics_pb2.InferRequest(base=b"LC\x03", camera_id="fz-0"),
    ),
    LIST_CAMERAS: (operator_pb2.ListCamerasRequest, "unary", {S.OK}, operator_pb2.ListCamerasRequest()),
    LIST_FRAMES: (
        operator_pb2.ListFramesRequest,
        "unary",
        {S.OK},
        operator_pb2.ListFramesRequest(camera_id="fz-0", before_sequence=5, limit=3),
    ),
    GET_PREVIEW: (
        operator_pb2.FrameRef,
        "unary",
        {S.OK, S.NOT_FOUND},
        operator_pb2.FrameRef(camera_id="fz-0", sequence=1),
    ),
    ENHANCE: (
        operator_pb2.EnhanceRequest,
        "unary",
        {S.NOT_FOUND, S.UNAVAILABLE},
        operator_pb2.EnhanceRequest(frame=operator_pb2.FrameRef(camera_id="fz-0", sequence=1)),
    ),
    HEALTH_CHECK: (
        health_pb2.HealthCheckRequest,
        "unary",
        {S.OK, S.NOT_FOUND},
        health_pb2.HealthCheckRequest(service="layercast.v1.EdgeLink"),
    ),
    HEALTH_WATCH: (health_pb2.HealthCheckRequest, "watch", {None}, health_pb2.HealthCheckRequest()),
    REFLECTION: (
        reflection_pb2.ServerReflectionRequest,
        "bidi",
        {S.OK},
        reflection_pb2.ServerReflectionRequest(list_services=""),
    ),
    MISSING: (None, "unary", {S.UNIMPLEMENTED}, None),
}


@st.composite
def raw_cases(draw: st.DrawFn) -> tuple[str, list[bytes]]:
    method = draw(st.sampled_from(list(METHODS)))
    _, kind, _, valid = METHODS[method]
    one = weighted(
        (3, wire_mutations(valid.SerializeToString() if valid is not None else b"")),
        (2, st.binary(max_size=200)),
        (1, texts().map(str.encode)),
        (1, st.just(b"")),
    )
    count = draw(st.integers(1, 3)) if kind == "bidi" else 1
    return method, [draw(one) for _ in range(count)]


def expected(method: str, payloads: list[bytes]) -> set[grpc.StatusCode | None]:
    """Statuses the call may end with: INVALID_ARGUMENT if a request does not parse, else the method's own."""
    message_type, kind, allowed, _ = METHODS[method]
    if message_type is None:
        return allowed
    for p in payloads:
        if len(p) > MAX_MESSAGE:
            return {S.RESOURCE_EXHAUSTED}
        try:
            message_type.FromString(p)
        except DecodeError:
            # a stream refuses at the bad message; before it, the method may already have ended
            return {S.INVALID_ARGUMENT} | (allowed - {S.OK, None} if kind == "bidi" else set())
    return allowed


def parses(message_type: type[Message], payloads: list[bytes]) -> list[bool]:
    ok = []
    for p in payloads:
        try:
            message_type.FromString(p)
            ok.append(True)
        except DecodeError:
            ok.append(False)
    return ok


def call(fz: FuzzServer, method: str, payloads: list[bytes], allowed: set[grpc.StatusCode | None]) -> Outcome:
    kind = METHODS[method][1]
    # a stream that should stay open is watched briefly; one that should end is given time to end
    quiet_s = 0.05 if None in allowed else 10.0
    if kind == "bidi":
        return bidi(fz.sync_channel, method, payloads, timeout=20)
    if kind == "stream":
        return fz.run(server_stream(fz.channel, method, payloads[0], expect=0, quiet_s=quiet_s))
    if kind == "watch":  # answers its current status at once, then stays open
        return fz.run(server_stream(fz.channel, method, payloads[0], expect=1, quiet_s=quiet_s))
    return fz.run(unary(fz.channel, method, payloads[0]))


def run_raw_fuzz(fz: FuzzServer, samples: Samples, cases_n: int, *, nightly: bool) -> dict:
    tally = Tally("raw bytes, every method")
    per_method: dict[str, Tally] = {m: Tally(m) for m in METHODS}

    def one(case: tuple[str, list[bytes]]) -> None:
        method, payloads = case
        allowed = expected(method, payloads)
        out = call(fz, method, payloads, allowed)
        tally.check(out, allowed, what=method)
        per_method[method].check(out, allowed)
        message_type = METHODS[method][0]
        if (
            out.code is S.INVALID_ARGUMENT
            and message_type is not None
            and not all(parses(message_type, payloads))
        ):
            assert message_type.DESCRIPTOR.full_name in out.details, out.details  # says what did not parse

    run_fuzz(one, cases_n, nightly=nightly, case=raw_cases())
    for m, t in per_method.items():
        print(f"  {m}: {dict(t.counts)}")
    stats = finish(fz, samples, tally)
    assert tally.counts["INVALID_ARGUMENT"] > 0, stats
    return stats


def test_fuzz_raw_bytes(fuzz_server: FuzzServer, samples: Samples) -> None:
    run_raw_fuzz(fuzz_server, samples, DEFAULT_CASES, nightly=False)


@pytest.mark.nightly
@pytest.mark.timeout(nightly_timeout())
def test_fuzz_raw_bytes_nightly(fuzz_server: FuzzServer, samples: Samples) -> None:
    run_raw_fuzz(fuzz_server, samples, nightly_cases(), nightly=True)
