"""The Subscribe client against a scripted Analytics server on loopback: it resumes from the last
sequence seen after a lag, or raises when told not to."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio

from layercast.shared.results_client import SubscriberLagged, results
from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc, common_pb2


class LaggingAnalytics(analytics_pb2_grpc.AnalyticsServicer):
    """First call: results a/1, a/2, then Lagged and RESOURCE_EXHAUSTED, as the cloud does.
    Later calls: what comes after the request's resume points."""

    def __init__(self) -> None:
        self.requests: list[analytics_pb2.SubscribeRequest] = []

    async def Subscribe(self, request, context):
        self.requests.append(request)
        if len(self.requests) == 1:
            for seq in (1, 2):
                yield analytics_pb2.SubscribeEvent(result=common_pb2.Result(camera_id="a", sequence=seq))
            yield analytics_pb2.SubscribeEvent(
                lagged=analytics_pb2.Lagged(resume_after={"a": 2}, message="subscriber queue full")
            )
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "subscriber queue full")
        after = request.resume_after.get("a", 0)
        for seq in range(after + 1, after + 3):
            yield analytics_pb2.SubscribeEvent(result=common_pb2.Result(camera_id="a", sequence=seq))


@pytest.fixture
async def analytics():
    servicer = LaggingAnalytics()
    server = aio.server()
    analytics_pb2_grpc.add_AnalyticsServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield servicer, analytics_pb2_grpc.AnalyticsStub(channel)
    await server.stop(0)


async def test_a_lagged_subscription_resumes_after_the_last_sequence_seen(analytics):
    servicer, stub = analytics
    lags: list[SubscriberLagged] = []
    got = []
    async for r in results(stub, cameras=["a"], on_lag=lags.append):
        got.append(r.sequence)
        if len(got) == 4:
            break
    assert got == [1, 2, 3, 4]  # nothing missed, nothing twice
    assert [lag.resume_after for lag in lags] == [{"a": 2}]
    assert dict(servicer.requests[1].resume_after) == {"a": 2} and list(servicer.requests[1].camera_ids) == [
        "a"
    ]


async def test_without_resume_a_lag_is_raised_with_its_resume_points(analytics):
    _, stub = analytics
    got = []
    with pytest.raises(SubscriberLagged) as info:
        async for r in results(stub, resume_on_lag=False):
            got.append(r.sequence)
    assert got == [1, 2] and info.value.resume_after == {"a": 2}
