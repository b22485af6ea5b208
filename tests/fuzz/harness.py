"""The fuzz harness: a real CloudServer (the shipped tiny codec) on 127.0.0.1, driven by hypothesis.

Why a loop thread: hypothesis drives plain (sync) test functions one example at a time, while the
server and the fuzz clients are grpc.aio and share one event loop in a background thread. Each
example submits one coroutine to that loop and waits for it with a hard bound, so a server that
hangs fails the example ("no answer within N s") instead of stalling the run.

Every call goes out as raw bytes (identity serializers), so a case can send well-formed messages,
mutated ones and plain garbage alike; :class:`Tally` checks each outcome: a status from the
handler's allowed set, never UNKNOWN or INTERNAL, and a non-empty message with every error.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import ctypes
import gc
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings

from layercast.cloud.config import CloudConfig
from layercast.cloud.security.credentials import hash_token
from layercast.cloud.server import CloudServer
from layercast.shared.codec.api import ScalableCodec
from tests.cloud.conftest import cloud_config, operator_channel

T = TypeVar("T")
KiB = 1 << 10

#: Cases per handler in a nightly run (``LAYERCAST_FUZZ_CASES`` overrides).
CASES_ENV = "LAYERCAST_FUZZ_CASES"
NIGHTLY_CASES = 10_000

#: Cameras the fuzz server knows. ``fz-jump`` alone may receive huge (valid) sequence numbers, so
#: the others keep accepting new frames for the whole run.
CAMERAS = {f"fz-{i}": f"fuzz-token-{i}-" + "k" * 24 for i in range(6)}
CAMERAS.update({name: f"fuzz-token-{name}-" + "k" * 24 for name in ("fz-jump", "fz-op", "fz-off", "fz-live")})

#: Limits of the fuzz server: small, so oversize inputs are cheap to build.
LIMITS = {
    "limits.max_message_bytes": 256 * KiB,
    "limits.max_frame_bytes": 128 * KiB,
    "limits.max_image_pixels": 256 * 256,
    "limits.hello_timeout_s": 1.0,
}
MAX_MESSAGE = LIMITS["limits.max_message_bytes"]

#: Statuses no input may ever produce: they mean an unexpected error inside the server.
NEVER = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})
#: What grpc itself says when the client's own deadline passed: the server did not answer in time.
CLIENT_DEADLINE_TEXT = "Deadline Exceeded"

CLIENT_OPTIONS = [
    ("grpc.max_send_message_length", 8 << 20),
    ("grpc.max_receive_message_length", 8 << 20),
]


def nightly_cases() -> int:
    """Cases per handler for a nightly run."""
    return int(os.environ.get(CASES_ENV, NIGHTLY_CASES))


def nightly_timeout() -> float:
    """pytest-timeout for a nightly test: the suite's 300 s is far too short for 10,000 cases."""
    return 300 + 0.5 * nightly_cases()


def fuzz_settings(cases: int, *, nightly: bool) -> settings:
    """Hypothesis settings of a fuzz run: no example database (the server's state differs run to run),
    no per-example deadline (the harness bounds every call itself), derandomized in the default suite
    so it is reproducible, random at night so each night explores new inputs."""
    return settings(
        max_examples=cases,
        deadline=None,
        database=None,
        derandomize=not nightly,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        print_blob=True,
    )


#: Examples per hypothesis run. Hypothesis keeps a tree of every example of a run (so it does not
#: repeat itself): about 20 MiB per thousand examples here, which would hide the server's own memory
#: use. Long runs are therefore several runs of at most this many, each drawing a fresh seed.
RUN_CASES = 1000


def run_fuzz(test: Callable[..., None], cases: int, *, nightly: bool, **strategies: Any) -> None:
    """Call ``test`` with ``cases`` examples drawn from ``strategies`` (keyword → strategy), in
    hypothesis runs of at most RUN_CASES examples."""
    done = 0
    while done < cases:
        n = min(RUN_CASES, cases - done)
        fuzz_settings(n, nightly=nightly)(given(**strategies)(test))()
        done += n


def rss_mb(*, trimmed: bool = False) -> float:
    """Resident memory of this process (server and clients), MiB.

    ``trimmed``: first collect garbage and hand the allocator's free pages back to the OS
    (glibc ``malloc_trim``). Large short-lived allocations (a 200 KiB request, a 20,000-name
    filter) leave freed memory in glibc's per-thread arenas; raw RSS then climbs by tens of MiB
    per thousand cases and drops again on a trim, while a leak survives it."""
    if trimmed:
        gc.collect()
        _malloc_trim()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: raw RSS it is
        pass


class Hang(AssertionError):
    """A call did not end within its bound."""


class LoopThread:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coro`` on the loop and wait for it; raise Hang after ``timeout`` seconds."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise Hang(f"no answer within {timeout:g} s") from None

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


def fuzz_config(tmp_path: Path, **overrides: Any) -> CloudConfig:
    """The fuzz server's configuration: the fuzz cameras, small limits, short timeouts; plain text
    on loopback (``cloud_config`` sets ``insecure``: TLS is not what is fuzzed here)."""
    values: dict[str, Any] = {
        "auth.camera_tokens": [f"{cam}={hash_token(tok)}" for cam, tok in CAMERAS.items()],
        "enhancement_timeout_s": 0.25,
        "cache_bytes": 0,  # every Enhance asks the camera, so each case reaches the edge's answer
        "batching.max_queue_delay_ms": 2,
        "shutdown_grace_s": 5.0,
        # Exact oracles need every call answered on its merits: no operator rate limit (0 = off).
        "limits.operator_requests_per_s": 0,
        **LIMITS,
    }
    values.update(overrides)
    return cloud_config(tmp_path, **values)


class FuzzServer:
    """A CloudServer with the given codec on its own loop thread, and a client channel to it."""

    def __init__(self, codec: ScalableCodec, tmp_path: Path, **overrides: Any) -> None:
        self.codec = codec
        self.config = fuzz_config(tmp_path, **overrides)
        self.threads = LoopThread()
        self.server: CloudServer
        self.channel: aio.Channel
        self.run(self._start(), timeout=120)
        #: For streaming requests (see :func:`bidi`), used from the test's thread.
        self.sync_channel = grpc.insecure_channel(self.target, options=CLIENT_OPTIONS)

    async def _start(self) -> None:
        self.server = CloudServer(self.config, codec=self.codec)
        await self.server.start()
        # The operator calls carry cloud_config's enhancer token: the handlers are fuzzed, not authentication.
        self.channel = operator_channel(self.server.target, options=CLIENT_OPTIONS)

    @property
    def target(self) -> str:
        return self.server.target

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return self.threads.run(coro, timeout)

    def stop(self) -> None:
        async def stop() -> None:
            await self.channel.close()
            await self.server.stop(5.0)

        self.sync_channel.close()
        try:
            self.run(stop(), timeout=30)
        finally:
            self.threads.close()

    def health(self) -> int:
        """The overall health status (``HealthCheckResponse.ServingStatus``)."""

        async def check() -> int:
            stub = health_pb2_grpc.HealthStub(self.channel)
            return (await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)).status

        return self.run(check(), timeout=20)


# -- calls -----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How one call ended. ``code`` None: a stream still open when the client stopped reading."""

    code: grpc.StatusCode | None
    details: str
    responses: list[bytes] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return "OPEN" if self.code is None else self.code.name


async def _status(call: Any, responses: list[bytes], t0: float) -> Outcome:
    return Outcome(await call.code(), await call.details() or "", responses, time.perf_counter() - t0)


async def unary(channel: aio.Channel, method: str, payload: bytes, timeout: float = 20.0) -> Outcome:
    """A unary call with ``payload`` as the serialized request."""
    t0 = time.perf_counter()
    call = channel.unary_unary(method)(payload, timeout=timeout)
    try:
        return Outcome(grpc.StatusCode.OK, "", [await call], time.perf_counter() - t0)
    except aio.AioRpcError as exc:
        return Outcome(exc.code(), exc.details() or "", [], time.perf_counter() - t0)


async def server_stream(
    channel: aio.Channel, method: str, payload: bytes, *, expect: int, quiet_s: float, timeout: float = 20.0
) -> Outcome:
    """A server-streaming call, read until it ends, or until ``expect`` messages arrived and nothing more
    came for ``quiet_s`` (then it is cancelled and reported OPEN: a live subscription with nothing to
    say). Reading stops at ``expect + 1`` messages (one too many is enough to fail a check)."""
    t0 = time.perf_counter()
    call = channel.unary_stream(method)(payload, timeout=timeout)
    responses: list[bytes] = []
    try:
        while len(responses) <= expect:
            wait = None if len(responses) < expect else quiet_s  # None: up to the call's deadline
            msg = await asyncio.wait_for(call.read(), wait)
            if msg is aio.EOF:
                return await _status(call, responses, t0)
            responses.append(msg)
    except TimeoutError:
        pass
    except aio.AioRpcError as exc:
        return Outcome(exc.code(), exc.details() or "", responses, time.perf_counter() - t0)
    call.cancel()
    return Outcome(None, "", responses, time.perf_counter() - t0)


def bidi(channel: grpc.Channel, method: str, payloads: Sequence[bytes], *, timeout: float = 30.0) -> Outcome:
    """A bidirectional call on a *sync* channel: send ``payloads``, half-close, read until the server ends it.

    Sync on purpose: a grpc.aio client that is still writing when the server ends the call may
    report INTERNAL "Internal error from Core" instead of the server's status
    (https://github.com/grpc/grpc/issues/36066); the sync client reports the server's status."""
    t0 = time.perf_counter()
    call = channel.stream_stream(method)(iter(payloads), timeout=timeout)
    responses: list[bytes] = []
    try:
        for msg in call:
            responses.append(msg)
        return Outcome(call.code(), call.details() or "", responses, time.perf_counter() - t0)
    except grpc.RpcError as exc:
        return Outcome(exc.code(), exc.details() or "", responses, time.perf_counter() - t0)


# -- checking --------------------------------------------------------------------------------------


class Tally:
    """Counts outcomes per handler and checks each against the handler's allowed statuses."""

    def __init__(self, handler: str) -> None:
        self.handler = handler
        self.counts: collections.Counter[str] = collections.Counter()
        self.cases = 0
        self.worst_s = 0.0
        self.t0 = time.perf_counter()
        self.rss_start = rss_mb(trimmed=True)
        self.rss_warm: float | None = None
        self.rss_curve: list[float] = []  # every 1000 cases (trimmed): a leak shows as a steady climb

    def check(
        self, outcome: Outcome, allowed: Iterable[grpc.StatusCode | None], *, what: str = ""
    ) -> Outcome:
        """Assert that ``outcome`` is an allowed, explained status; count it."""
        self.cases += 1
        self.counts[outcome.label] += 1
        self.worst_s = max(self.worst_s, outcome.seconds)
        if self.cases == 50:
            self.rss_warm = rss_mb(trimmed=True)  # after warm-up: caches, thread pools, first batches
        if self.cases % 1000 == 0:
            self.rss_curve.append(round(rss_mb(trimmed=True), 1))
            if self.cases == 1000:  # a long run counts from here: one hypothesis run's worth of state is in
                self.rss_warm = self.rss_curve[0]
        where = f"{self.handler} {what}".strip()
        assert outcome.code not in NEVER, f"{where}: {outcome.label} {outcome.details!r}"
        if outcome.code is grpc.StatusCode.DEADLINE_EXCEEDED:
            assert outcome.details != CLIENT_DEADLINE_TEXT, f"{where}: no answer within the client's deadline"
        assert outcome.code in set(allowed), f"{where}: unexpected {outcome.label} {outcome.details!r}"
        if outcome.code not in (None, grpc.StatusCode.OK):
            assert outcome.details.strip(), f"{where}: {outcome.label} without a message"
        return outcome

    def summary(self) -> dict[str, Any]:
        raw = rss_mb()
        return {
            "handler": self.handler,
            "cases": self.cases,
            "statuses": dict(sorted(self.counts.items())),
            "seconds": round(time.perf_counter() - self.t0, 1),
            "worst_call_s": round(self.worst_s, 3),
            "rss_raw_end_mb": round(raw, 1),
            "rss_start_mb": round(self.rss_start, 1),  # these trimmed (see rss_mb)
            "rss_warm_mb": round(self.rss_warm or self.rss_start, 1),
            "rss_end_mb": round(rss_mb(trimmed=True), 1),
            "rss_every_1000_mb": self.rss_curve,
        }

    def rss_growth_mb(self) -> float:
        """Trimmed growth since the warm-up point: case 50, or case 1000 on long runs."""
        return rss_mb(trimmed=True) - (self.rss_warm or self.rss_start)


def report(tally: Tally, *, max_growth_mb: float = 64.0) -> dict[str, Any]:
    """Print the run's figures (``pytest -s`` shows them) and check memory stayed bounded."""
    s = tally.summary()
    print(f"\nFUZZ {s}")
    assert tally.rss_growth_mb() < max_growth_mb, f"{tally.handler}: RSS grew too much: {s}"
    return s
