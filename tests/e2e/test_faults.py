"""Faults and bad input at the service level: a real ``layercast cloud`` process, real
``layercast edge`` processes and hand-driven gRPC streams over loopback.

Complements tests/cloud/test_server.py (in-process server, protocol details): here the
edge is a real process where its behaviour matters (refused, expired, offline, crash of the
cloud), and the bitstream faults are the ones the in-process tests do not send
(truncated, a forged payload that passes every header check, empty, a message larger
than the server accepts).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from layercast.shared.codec import ScalableCodec, bitstream
from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc, operator_pb2, operator_pb2_grpc
from tests.cloud.conftest import OPERATOR_METADATA, OPERATOR_TOKEN, EdgeStream
from tests.e2e.conftest import HEIGHT, WIDTH, camera_images, write_folder
from tests.e2e.services import ROOT, CloudProcess, EdgeProcess, Model, wait_until

MiB = 1 << 20
TOKENS = {
    cam: f"faults-{cam}-" + "z" * 24
    for cam in ("hand-1", "hand-2", "bad-1", "alien-1", "exp-1", "k-1", "k-2", "k-3", "k-4")
}
WRONG_TOKEN = "not-the-token-of-bad-1-" + "q" * 16


def code_number(code: grpc.StatusCode) -> int:
    return code.value[0]


def forge(base: bytes) -> bytes:
    """Alter the payload and recompute the container CRC: every header check passes, decoding does not."""
    payload = bytearray(bitstream.payload(base))
    for i in range(len(payload) // 4, len(payload), 7):
        payload[i] ^= 0x5A
    return bitstream.pack(bitstream.parse_header(base), bytes(payload))


def subscribe(target: str, camera: str, n: int, timeout: float = 60.0) -> list:
    """The first ``n`` results of ``camera`` from the oldest kept (sync client)."""
    out = []
    with grpc.insecure_channel(target) as ch:
        call = analytics_pb2_grpc.AnalyticsStub(ch).Subscribe(
            analytics_pb2.SubscribeRequest(camera_ids=[camera]), metadata=OPERATOR_METADATA, timeout=timeout
        )
        for ev in call:
            out.append(ev.result)
            if len(out) == n:
                call.cancel()
                break
    return out


def enhance_error(target: str, camera: str, seq: int) -> grpc.RpcError:
    with grpc.insecure_channel(target) as ch:
        with pytest.raises(grpc.RpcError) as info:
            operator_pb2_grpc.OperatorStub(ch).Enhance(
                operator_pb2.EnhanceRequest(frame=operator_pb2.FrameRef(camera_id=camera, sequence=seq)),
                metadata=OPERATOR_METADATA,
                timeout=60,
            )
    return info.value


def camera_list(target: str) -> dict[str, operator_pb2.Camera]:
    with grpc.insecure_channel(target) as ch:
        resp = operator_pb2_grpc.OperatorStub(ch).ListCameras(
            operator_pb2.ListCamerasRequest(), metadata=OPERATOR_METADATA, timeout=30
        )
    return {c.camera_id: c for c in resp.cameras}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, model: Model) -> Iterator[CloudProcess]:
    """One cloud process for the whole module, with small message limits. It is only launched
    here: whoever needs it serving calls ``wait_serving()``, so edges can start alongside it.
    The last test of the module crashes and restarts it."""
    proc = CloudProcess(
        tmp_path_factory.mktemp("faults-cloud"),
        model,
        TOKENS,
        {"limits": {"max_message_bytes": 1 * MiB, "max_frame_bytes": 256 * 1024}},
    )
    try:
        proc.launch()
        yield proc
    finally:
        proc.cleanup()


def _edge(work: Path, cloud: CloudProcess, model: Model, cam: str, token: str, **extra: Any) -> EdgeProcess:
    source = {"spec": "synthetic:5", "width": WIDTH, "height": HEIGHT, "fps": 2.0, **extra.pop("source", {})}
    edge = EdgeProcess(work / cam, model, cam, token, cloud.target, "synthetic", {"source": source, **extra})
    edge.start(backoff_max_s=2.0)
    return edge


@pytest.fixture(scope="module")
def refused(
    tmp_path_factory: pytest.TempPathFactory, cloud: CloudProcess, model: Model, foreign_model: Model
) -> Iterator[dict[str, EdgeProcess]]:
    """Two real edges the cloud refuses, started together: a wrong token, a model it lacks."""
    work = tmp_path_factory.mktemp("faults-refused")
    procs: dict[str, EdgeProcess] = {}
    try:
        procs["bad-1"] = _edge(work, cloud, model, "bad-1", WRONG_TOKEN)
        procs["alien-1"] = _edge(work, cloud, foreign_model, "alien-1", TOKENS["alien-1"])
        cloud.wait_serving()
        yield procs
    finally:
        for p in procs.values():
            p.cleanup()


@pytest.fixture(scope="module")
def short_memory_edge(
    tmp_path_factory: pytest.TempPathFactory, cloud: CloudProcess, model: Model
) -> Iterator[EdgeProcess]:
    """A real edge that keeps its enhancement layers for one second only (started with the cloud)."""
    edge = _edge(
        tmp_path_factory.mktemp("faults-exp"),
        cloud,
        model,
        "exp-1",
        TOKENS["exp-1"],
        source={"fps": 4.0},
        store={"max_age_s": 1.0},
    )
    try:
        cloud.wait_serving()
        yield edge
    finally:
        edge.cleanup()


# -- real edges ------------------------------------------------------------------------------------


@pytest.mark.slow  # the refusal itself is tested in tests/cloud/test_server.py; here: the real edge
def test_edge_with_a_wrong_token_is_refused_and_keeps_its_frames(
    cloud: CloudProcess, refused: dict[str, EdgeProcess]
) -> None:
    edge = refused["bad-1"]
    wait_until(
        lambda: "the cloud refused camera bad-1: UNAUTHENTICATED" in edge.stderr(),
        180,
        f"the edge to log its refusal\n{edge.describe()}",
        interval=0.2,
    )
    assert "bad-1" not in camera_list(cloud.target)  # nothing was stored for it
    time.sleep(1.5)  # the camera goes on capturing (2 fps) into its outbox meanwhile
    run = edge.stop()
    assert run.returncode == 0
    assert run.stats["connects"] == 0 and run.stats["frames_acked"] == 0
    assert run.stats["frames_queued"] >= 1  # captured frames wait in the outbox for a fixed configuration
    assert WRONG_TOKEN not in cloud.stderr() + edge.stderr()  # secrets stay out of the logs


@pytest.mark.slow  # the refusal itself is tested in tests/cloud/test_server.py; here: the real edge
def test_edge_running_a_model_the_cloud_lacks_is_told_its_id(
    refused: dict[str, EdgeProcess], foreign_model: Model, codec: ScalableCodec
) -> None:
    from layercast.shared.codec.registry import Registry

    foreign_id = Registry([foreign_model.models_dir]).resolve(foreign_model.name).model_id
    assert foreign_id != codec.base_model_id
    edge = refused["alien-1"]
    line = wait_until(
        lambda: next(
            (ln for ln in edge.stderr().splitlines() if "refused camera alien-1: FAILED_PRECONDITION" in ln),
            None,
        ),
        180,
        f"the edge to log its refusal\n{edge.describe()}",
        interval=0.2,
    )
    assert foreign_id in line and codec.base_model_id in line
    assert edge.stop().stats["frames_acked"] == 0


def test_expired_frame_is_not_found_and_offline_camera_unavailable(
    cloud: CloudProcess, short_memory_edge: EdgeProcess
) -> None:
    edge = short_memory_edge
    first = subscribe(cloud.target, "exp-1", 2, timeout=180)
    assert [r.sequence for r in first] == [1, 2]
    # the edge keeps enhancement layers for one second after capture
    time.sleep(max(0.0, first[0].capture_time_us / 1e6 + 1.5 - time.time()))
    err = enhance_error(cloud.target, "exp-1", 1)
    assert err.code() == grpc.StatusCode.NOT_FOUND and "retention" in err.details(), err.details()

    run = edge.stop()
    assert run.returncode == 0 and run.stats["frames_acked"] >= 2
    assert run.stats["enhancement_requests"] == 1 and run.stats["enhancement_served"] == 0
    assert run.stats["enhancement_unavailable"] == {"expired": 1}
    wait_until(lambda: not camera_list(cloud.target)["exp-1"].online, 30, "the camera to go offline")
    err = enhance_error(cloud.target, "exp-1", 2)
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "offline" in err.details(), err.details()


# -- hand-driven streams ------------------------------------------------------------------------------


async def _connect(ch: aio.Channel, codec: ScalableCodec, cam: str) -> EdgeStream:
    e = EdgeStream(ch)
    e.hello(cam, TOKENS[cam], codec.base_model_id, next_sequence=1)
    await e.recv_kind("welcome")
    return e


async def test_bad_bitstreams_are_refused_one_by_one_and_the_stream_goes_on(
    cloud: CloudProcess, codec: ScalableCodec
) -> None:
    cloud.wait_serving()
    good = [f.base for f in codec.encode_batch(camera_images(3, 3), layers="base")]
    sent = {
        1: good[0],
        2: good[1][: len(good[1]) - 9],  # truncated in transit
        3: forge(good[1]),  # a payload that passes the container CRC but does not decode
        4: b"",  # empty
        5: b"\x00" * 64,  # not a layercast bitstream
        6: good[1][:20],  # shorter than a header
        7: good[2],
    }
    async with aio.insecure_channel(cloud.target) as ch:
        e = await _connect(ch, codec, "hand-1")
        for seq, data in sent.items():
            e.frame(seq, data)
        acks, rejected = [], {}
        while len(rejected) < 5 or len(acks) < 3:
            msg = await e.recv(60)
            kind = msg.WhichOneof("kind")
            if kind == "ack":
                acks.append(msg.ack.sequence)
            elif kind == "rejected":
                rejected[msg.rejected.sequence] = (msg.rejected.code, msg.rejected.message)
        e.close()
    # the forged frame is stored and acknowledged (its header is sound), then refused when it
    # fails to decode; the others never pass the header checks
    assert sorted(acks) == [1, 3, 7]
    invalid = code_number(grpc.StatusCode.INVALID_ARGUMENT)
    assert {s: c for s, (c, _) in rejected.items()} == {
        2: invalid,
        3: code_number(grpc.StatusCode.DATA_LOSS),  # symbol-CRC mismatch (shared/errors.DecodeMismatch)
        4: invalid,
        5: invalid,
        6: invalid,
    }
    assert all(msg for _, msg in rejected.values())
    assert [r.sequence for r in subscribe(cloud.target, "hand-1", 2)] == [1, 7]


async def test_message_above_the_limit_ends_the_stream_with_resource_exhausted(
    cloud: CloudProcess, codec: ScalableCodec
) -> None:
    cloud.wait_serving()
    base = codec.encode_batch(camera_images(4, 1), layers="base")[0].base
    async with aio.insecure_channel(cloud.target, options=[("grpc.max_send_message_length", 8 * MiB)]) as ch:
        e = await _connect(ch, codec, "hand-2")
        e.frame(1, base)
        assert (await e.recv_kind("ack")).sequence == 1
        e.frame(2, base + bytes(2 * MiB))  # one message of 2 MiB; the cloud accepts 1 MiB
        with pytest.raises(aio.AioRpcError) as info:
            while True:
                await e.recv(60)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # the cloud is fine and the camera reconnects where it was
        health = health_pb2_grpc.HealthStub(ch)
        assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=10)).status == 1
        e2 = EdgeStream(ch)
        e2.hello("hand-2", TOKENS["hand-2"], codec.base_model_id, next_sequence=2)
        assert (await e2.recv_kind("welcome")).last_acked_sequence == 1
        e2.frame(2, base)
        assert (await e2.recv_kind("ack")).sequence == 2
        e2.close()
        await asyncio.sleep(0)


# -- a crash of the cloud ---------------------------------------------------------------------------

KILL_FRAMES = 20
KILL_CAMERAS = ("k-1", "k-2", "k-3", "k-4")


def test_kill_9_of_the_cloud_mid_run_loses_and_duplicates_nothing(
    tmp_path_factory: pytest.TempPathFactory, model: Model, cloud: CloudProcess
) -> None:
    """Last test of the module: it crashes the module's cloud (SIGKILL) while four edges stream,
    and restarts it on the same port and data directory."""
    work = tmp_path_factory.mktemp("kill9")
    cams = KILL_CAMERAS
    folders = {
        cam: write_folder(work / "frames" / cam, camera_images(10 + i, KILL_FRAMES))
        for i, cam in enumerate(cams)
    }
    edges: dict[str, EdgeProcess] = {}
    live = None
    try:
        for cam in cams:
            edges[cam] = EdgeProcess(
                work / cam,
                model,
                cam,
                TOKENS[cam],
                cloud.target,
                f"folder:{folders[cam]}",
                {"source": {"limit": KILL_FRAMES, "fps": 8.0}},
            )
            edges[cam].start(backoff_max_s=1.0)
        cloud.wait_serving()
        # a live subscriber that resumes by itself across the crash
        live_out = work / "live.jsonl"
        with open(live_out, "wb") as out:
            live = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "layercast",
                    "subscribe",
                    "--cloud",
                    cloud.target,
                    "--insecure",
                    "--retry",
                    *(arg for cam in cams for arg in ("--camera", cam)),
                    "--limit",
                    str(len(cams) * KILL_FRAMES),
                ],
                stdout=out,
                stderr=subprocess.DEVNULL,
                cwd=ROOT,
                env={**os.environ, "LAYERCAST_TOKEN": OPERATOR_TOKEN},  # the cloud's operator
            )

        def lines() -> int:
            return len(live_out.read_bytes().splitlines())

        wait_until(lambda: lines() >= 8, 240, "the first results")
        cloud.kill9()
        before = [json.loads(line) for line in live_out.read_bytes().splitlines()]
        assert len(before) < len(cams) * KILL_FRAMES  # the crash really is mid-run
        t0 = time.monotonic()
        cloud.start()  # same port, same data directory
        restart_s = time.monotonic() - t0
        runs = {cam: e.finish(timeout=300) for cam, e in edges.items()}
        assert live.wait(120) == 0
        final = {cam: subscribe(cloud.target, cam, KILL_FRAMES) for cam in cams}
    except BaseException:
        print(cloud.describe())
        for e in edges.values():
            print(e.describe())
        raise
    finally:
        if live is not None and live.poll() is None:
            live.kill()
        for p in edges.values():
            p.cleanup()

    for cam in cams:
        # exactly once each, in order, from a subscription from the oldest result
        assert [r.sequence for r in final[cam]] == list(range(1, KILL_FRAMES + 1))
        s = runs[cam].stats
        assert runs[cam].returncode == 0
        assert s["frames_captured"] == KILL_FRAMES and s["frames_dropped_capture"] == 0, s
        assert s["frames_dropped_outbox"] == 0 and s["frames_rejected"] == 0, s
        if any(r["camera_id"] == cam for r in before):  # it was streaming when the cloud died ...
            assert s["connects"] >= 2, s  # ... and reconnected to the restarted cloud
    # the subscriber that lived through the crash saw each result once, in order per camera
    got = [json.loads(line) for line in live_out.read_text().splitlines()]
    for cam in cams:
        assert [r["sequence"] for r in got if r["camera_id"] == cam] == list(range(1, KILL_FRAMES + 1))
    assert {(r["camera_id"], r["sequence"]): r["capture_time_us"] for r in got} == {
        (cam, r.sequence): r.capture_time_us for cam in cams for r in final[cam]
    }
    stats = [runs[cam].stats for cam in cams]
    print(
        f"\nFIGURE cloud kill -9: {len(cams)} cameras x {KILL_FRAMES} frames, killed after {len(before)} "
        f"results, back in {restart_s:.1f}s; results {sum(len(final[c]) for c in cams)}, lost 0, "
        f"duplicates 0 (live subscriber saw {len(got)}); edges resent {sum(s['frames_resent'] for s in stats)}, "
        f"acked as duplicate {sum(s['frames_acked_duplicate'] for s in stats)}"
    )
