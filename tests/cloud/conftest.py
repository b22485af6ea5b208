"""Fixtures for the cloud tests: a real (untrained, tiny) codec with a task model, real
bitstreams, and a real CloudServer on 127.0.0.1 with a port chosen by the OS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from grpc import aio

import layercast.shared.tasks.builtin  # noqa: F401  (registers the task models)
from layercast.cloud.config import CloudConfig, load_cloud_config
from layercast.cloud.ingest.frame import Frame
from layercast.cloud.security.credentials import hash_token
from layercast.cloud.server import CloudServer
from layercast.shared.codec.api import EncodedFrame, ScalableCodec
from layercast.shared.codec.bitstream import Bitstream, Header, LayerKind, parse_header
from layercast.shared.codec.factory import (
    base_checkpoint,
    build_base,
    build_enhancement,
    enhancement_checkpoint,
)
from layercast.shared.rpc import edge_pb2, edge_pb2_grpc
from layercast.shared.tasks import get_task_model
from tests.conftest import smooth_image

CLASS_NAMES = ["person", "car", "bicycle"]


def stored_frame(
    cam: str,
    seq: int,
    data: bytes,
    *,
    capture_time_us: int = 0,
    received_us: int = 0,
    size: tuple[int, int] | None = None,
    model_id: str = "ab" * 8,
) -> Frame:
    """A Frame as the pipeline builds it: a real bitstream's parsed header, or with ``size`` (width,
    height) a header made up for bytes the store never decodes."""
    if size is None:
        header = parse_header(data)
    else:
        header = Header(LayerKind.BASE, model_id, 0, size[0], size[1], len(data), 0)
    return Frame(cam, seq, capture_time_us, received_us, Bitstream(header, data))


TOKENS = {"cam-a": "token-a-" + "x" * 24, "cam-b": "token-b-" + "y" * 24}
#: The operator token of ``cloud_config``'s servers: operator ``tester``, an enhancer.
OPERATOR = "tester"
OPERATOR_TOKEN = "operator-token-" + "z" * 24
OPERATOR_METADATA = (("authorization", f"Bearer {OPERATOR_TOKEN}"),)


def operator_channel(target: str, token: str = OPERATOR_TOKEN, **kwargs: Any) -> aio.Channel:
    """A plain-text channel whose every call carries ``token`` as the operator's bearer token."""
    return aio.insecure_channel(target, interceptors=bearer_interceptors(token), **kwargs)


class _Bearer:
    """Adds ``authorization: Bearer <token>`` to every call that does not carry one."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def _add(self, continuation: Any, details: aio.ClientCallDetails, request: Any) -> Any:
        metadata = aio.Metadata(*(details.metadata or ()))
        if "authorization" not in metadata:
            metadata.add("authorization", f"Bearer {self._token}")
        return await continuation(details._replace(metadata=metadata), request)


# A channel files each interceptor under the first call kind it is an instance of: one class per kind.
class _BearerUnaryUnary(_Bearer, aio.UnaryUnaryClientInterceptor):
    intercept_unary_unary = _Bearer._add


class _BearerUnaryStream(_Bearer, aio.UnaryStreamClientInterceptor):
    intercept_unary_stream = _Bearer._add


class _BearerStreamUnary(_Bearer, aio.StreamUnaryClientInterceptor):
    intercept_stream_unary = _Bearer._add


class _BearerStreamStream(_Bearer, aio.StreamStreamClientInterceptor):
    intercept_stream_stream = _Bearer._add


def bearer_interceptors(token: str) -> list[aio.ClientInterceptor]:
    """Client interceptors adding ``authorization: Bearer <token>`` to every call (of any kind)."""
    kinds = (_BearerUnaryUnary, _BearerUnaryStream, _BearerStreamUnary, _BearerStreamStream)
    return [kind(token) for kind in kinds]


def make_task_codec(task: str = "detection", seed: int = 0) -> ScalableCodec:
    """A tiny codec with random weights and a random task model: real bitstreams, real inference."""
    base = build_base("tiny", seed=seed)
    enh = build_enhancement("tiny", base.config.latent_channels, seed=seed + 1)
    with torch.no_grad():
        for g_a in (base.g_a, enh.g_a):  # spread the latents so symbols are varied
            g_a.net[-1].weight.mul_(30.0)
            g_a.net[-1].bias.mul_(30.0)
    torch.manual_seed(seed)
    if task == "detection":
        name, kwargs, names = "small_detector", {"num_classes": len(CLASS_NAMES)}, CLASS_NAMES
    else:
        name, kwargs, names = "small_depth", {}, []
    model = get_task_model(name, **kwargs)
    cb = base_checkpoint(
        base, model, task={"name": name, "kind": task, "kwargs": kwargs, "class_names": names}
    )
    ce = enhancement_checkpoint(enh, cb.model_id)
    return ScalableCodec(cb, ce, device="cpu")


@pytest.fixture(scope="session")
def task_codec() -> ScalableCodec:
    return make_task_codec("detection")


@pytest.fixture(scope="session")
def frames(task_codec: ScalableCodec) -> list[EncodedFrame]:
    """Twelve 64x64 frames (base + enhancement), encoded once."""
    rng = np.random.default_rng(7)
    return task_codec.encode_batch([smooth_image(rng, 64, 64) for _ in range(12)])


def cloud_config(tmp_path: Path, **overrides: Any) -> CloudConfig:
    """A cloud on 127.0.0.1, any free port; plain text (``insecure``) unless ``tls.*`` overrides are
    given (tests/cloud/test_tls.py covers TLS); operator ``tester`` (``OPERATOR_TOKEN``, an enhancer)."""
    values: dict[str, Any] = {
        "insecure": not any(key.startswith("tls.") for key in overrides),
        "listen": "127.0.0.1",
        "port": 0,
        "data_dir": str(tmp_path / "cloud"),
        "auth.camera_tokens": [f"{cam}={hash_token(tok)}" for cam, tok in TOKENS.items()],
        "auth.operator_tokens": [f"{OPERATOR}={hash_token(OPERATOR_TOKEN)}"],
        "auth.enhancers": [OPERATOR],
        "batching.max_queue_delay_ms": 5,
        "enhancement_timeout_s": 5.0,
        "shutdown_grace_s": 10.0,
    }
    if "auth.operator_tokens" in overrides:  # the test's own operators: enhancers are its to name
        values["auth.enhancers"] = []
    values.update(overrides)
    return load_cloud_config(overrides=values, environ={})


@pytest.fixture
async def cloud(tmp_path: Path, task_codec: ScalableCodec) -> AsyncIterator[CloudServer]:
    server = CloudServer(cloud_config(tmp_path), codec=task_codec)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(5.0)


class EdgeStream:
    """A hand-driven EdgeLink stream (what an edge does, step by step, for tests).

    A pump task reads the stream into a queue, so waiting for a message with a timeout
    never cancels the call itself."""

    def __init__(self, channel: aio.Channel) -> None:
        self._out: asyncio.Queue[edge_pb2.EdgeMessage | None] = asyncio.Queue()
        self._in: asyncio.Queue[Any] = asyncio.Queue()
        self.call = edge_pb2_grpc.EdgeLinkStub(channel).Connect(self._requests())
        self._pump = asyncio.create_task(self._read_all())

    async def _requests(self) -> AsyncIterator[edge_pb2.EdgeMessage]:
        while True:
            msg = await self._out.get()
            if msg is None:
                return
            yield msg

    async def _read_all(self) -> None:
        try:
            while True:
                msg = await self.call.read()
                if msg is aio.EOF:
                    self._in.put_nowait(EOFError("stream ended"))
                    return
                self._in.put_nowait(msg)
        except BaseException as exc:  # the RPC's status (AioRpcError) or cancellation
            self._in.put_nowait(exc)

    def send(self, **kind: Any) -> None:
        self._out.put_nowait(edge_pb2.EdgeMessage(**kind))

    def hello(self, camera_id: str, token: str, model_id: str, **extra: Any) -> None:
        self.send(hello=edge_pb2.Hello(camera_id=camera_id, token=token, base_model_id=model_id, **extra))

    def frame(self, sequence: int, base: bytes, resent: bool = False) -> None:
        self.send(
            frame=edge_pb2.BaseFrame(
                sequence=sequence, capture_time_us=1000 * sequence, base=base, resent=resent
            )
        )

    def close(self) -> None:
        """Half-close: the edge has nothing more to send."""
        self._out.put_nowait(None)

    async def recv(self, timeout: float = 30.0) -> edge_pb2.CloudMessage:
        item = await asyncio.wait_for(self._in.get(), timeout)
        if isinstance(item, BaseException):
            self._in.put_nowait(item)  # the stream stays ended for later calls
            raise item
        return item

    async def recv_kind(self, kind: str, timeout: float = 30.0, skip: tuple[str, ...] = ("credits",)) -> Any:
        """The next message of ``kind``, skipping kinds in ``skip``; fails on any other kind."""
        while True:
            msg = await self.recv(timeout)
            got = msg.WhichOneof("kind")
            if got == kind:
                return getattr(msg, kind)
            if got not in skip:
                raise AssertionError(f"expected {kind}, got {got}: {msg}")
