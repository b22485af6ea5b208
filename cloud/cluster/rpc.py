"""Calls between cloud replicas over Redis lists.

Each replica pops one list, its *inbox*: requests from other replicas and the answers to its own
requests (one blocking connection per replica, however many calls are in flight). A request names
the operation, the caller's inbox, an id and how long the caller waits; the answer carries the
result's bytes, or the error's gRPC status, type and message, raised again on the caller as the
same typed error (:mod:`layercast.shared.errors`), so a status survives the hop. An inbox expires
when nothing is pushed to it for a while: requests to a replica that died do not pile up.

One list item: the HMAC tag of the rest (:mod:`.signing`, ``cluster.secret``), a JSON header line,
then the payload bytes (a serialized protobuf message). The header names the receiving replica, and
a request the :class:`~.signing.Caller` it is made for; an item without a valid tag, taken from the
wrong inbox, or a request id seen before, is dropped and counted (:class:`~.signing.Rejections`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from layercast.cloud.cluster.keys import REDIS_ERRORS, Backoff, Keys, unreachable
from layercast.cloud.cluster.signing import Caller, Rejections, Signer
from layercast.shared import errors
from layercast.shared.errors import LayercastError, ReplicaError, RequestTimeout

log = logging.getLogger(__name__)

#: ``(payload, seconds the caller waits, who it is for) -> answer payload``; raises typed errors.
Handler = Callable[[bytes, float, Caller | None], Awaitable[bytes]]

#: A request older than its caller's wait plus this (wall clocks of two hosts) is dropped unanswered.
CLOCK_SKEW_S = 2.0
#: Seconds a blocking pop waits before looping (bounds how long close() waits for it).
POP_WAIT_S = 1.0


class ReplicaRpc:
    """Requests to other replicas (:meth:`call`) and serving theirs (:meth:`run`)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        replica_id: str,
        *,
        inbox_ttl_s: float,
        signer: Signer,
        rejections: Rejections | None = None,
    ) -> None:
        self._redis = redis
        self._signer = signer
        self.rejections = rejections if rejections is not None else Rejections()
        #: Request ids served recently → when they expire (a replayed request is refused).
        self._seen: dict[str, float] = {}
        self._keys = keys
        self.replica_id = replica_id
        self._inbox = keys.inbox(replica_id)
        self._inbox_ttl_ms = int(inbox_ttl_s * 1000)
        self._handlers: dict[str, Handler] = {}
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._serving: set[asyncio.Task[None]] = set()
        #: Calls sent to other replicas, and requests of other replicas served here.
        self.calls = 0
        self.served = 0

    def handle(self, op: str, handler: Handler) -> None:
        """Serve requests for ``op`` with ``handler``."""
        self._handlers[op] = handler

    async def call(
        self, replica_id: str, op: str, payload: bytes, *, timeout_s: float, caller: Caller | None = None
    ) -> bytes:
        """``op`` run by ``replica_id``; its answer, or its error raised here with the same status.

        RequestTimeout (DEADLINE_EXCEEDED) when no answer comes within ``timeout_s``,
        ClusterUnavailable (UNAVAILABLE) when Redis cannot be reached."""
        request_id = uuid.uuid4().hex
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = answer
        self.calls += 1
        try:
            header = {
                "kind": "request",
                "id": request_id,
                "op": op,
                "from": self.replica_id,
                "timeout": timeout_s,
                "expires": time.time() + timeout_s,
            }
            if caller is not None:
                header["caller"] = caller.as_header()
            await self._push(replica_id, header, payload)
            try:
                return await asyncio.wait_for(answer, timeout_s)
            except TimeoutError:
                raise RequestTimeout(
                    f"cloud replica {replica_id!r} did not answer {op} within {timeout_s:g} s"
                ) from None
        finally:
            self._waiting.pop(request_id, None)

    async def run(self) -> None:
        """Pop this replica's inbox until cancelled; Redis failures are retried with back-off."""
        backoff = Backoff(
            "read this replica's inbox in Redis", recovered="reading this replica's inbox in Redis again"
        )
        while True:
            try:
                popped = await self._redis.blpop([self._inbox], timeout=POP_WAIT_S)
            except REDIS_ERRORS as exc:
                await backoff.failed(exc)
                continue
            backoff.succeeded()
            if popped is not None:
                self._dispatch(popped[1])

    async def close(self) -> None:
        """Stop serving: requests being served are cancelled, calls still waiting fail."""
        for task in list(self._serving):
            task.cancel()
        await asyncio.gather(*self._serving, return_exceptions=True)
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_exception(errors.ServiceClosing("the server is shutting down"))

    # -- internals --------------------------------------------------------------------------------
    async def _push(self, replica_id: str, header: dict[str, Any], payload: bytes) -> None:
        inbox = self._keys.inbox(replica_id)
        line = json.dumps({**header, "to": replica_id}, separators=(",", ":")).encode()
        item = self._signer.tag("inbox", line, payload) + b"\n" + line + b"\n" + payload
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(inbox, item)
                pipe.pexpire(inbox, self._inbox_ttl_ms)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise unreachable(exc) from exc

    def _dispatch(self, raw: bytes) -> None:
        tag, _, rest = raw.partition(b"\n")
        line, _, payload = rest.partition(b"\n")
        refused = self._signer.check(tag if len(tag) == 64 else b"", "inbox", line, payload)
        if refused is not None:
            self.rejections.add(refused, "a message in this replica's inbox")
            return
        try:
            header = json.loads(line)
            kind, request_id = header["kind"], str(header["id"])
        except (ValueError, KeyError, TypeError):
            self.rejections.add("malformed", "a message in this replica's inbox")
            return
        if header.get("to") != self.replica_id:
            self.rejections.add("misaddressed", "a message meant for another replica")
            return
        if kind == "request" and not self._first_time(request_id, header.get("expires")):
            self.rejections.add("replayed", "a request already served")
            return
        if kind == "reply":
            answer = self._waiting.get(request_id)
            if answer is not None and not answer.done():
                if header.get("ok"):
                    answer.set_result(payload)
                else:
                    answer.set_exception(remote_error(header))
        elif kind == "request":
            task = asyncio.create_task(self._serve(header, payload), name=f"replica-rpc-{header.get('op')}")
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)

    async def _serve(self, header: dict[str, Any], payload: bytes) -> None:
        op, reply_to = str(header.get("op")), header.get("from")
        try:
            timeout_s = max(0.01, float(header["timeout"]))
            if time.time() > float(header["expires"]) + CLOCK_SKEW_S:
                log.info("dropped a request for %s: its caller stopped waiting", op)
                return
        except (KeyError, TypeError, ValueError):
            log.warning("dropped a request for %s without a valid timeout", op)
            return
        self.served += 1  # answered, whatever the outcome
        answer: dict[str, Any] = {"kind": "reply", "id": header["id"], "ok": True}
        body = b""
        try:
            handler = self._handlers.get(op)
            if handler is None:
                raise ReplicaError(
                    "UNIMPLEMENTED", f"cloud replica {self.replica_id!r} does not serve {op!r}"
                )
            # The handler gets a little less than the caller waits, so its own error arrives first.
            inner = timeout_s - min(0.5, timeout_s * 0.1)
            caller = Caller.from_header(header.get("caller"))
            body = await asyncio.wait_for(handler(payload, inner, caller), timeout_s)
        except LayercastError as exc:
            answer.update(ok=False, status=exc.grpc_status, type=type(exc).__name__, message=str(exc))
        except TimeoutError:
            answer.update(ok=False, status="DEADLINE_EXCEEDED", type="RequestTimeout")
            answer["message"] = (
                f"cloud replica {self.replica_id!r} did not finish {op} within {timeout_s:g} s"
            )
        except Exception:
            log.exception("serving %s for another replica failed", op)
            answer.update(
                ok=False,
                status="INTERNAL",
                type="",
                message=f"internal error on cloud replica {self.replica_id!r}",
            )
        if reply_to:
            try:
                await self._push(str(reply_to), answer, body)
            except LayercastError as exc:
                log.warning("could not answer %s of replica %s: %s", op, reply_to, exc)

    def _first_time(self, request_id: str, expires: object) -> bool:
        """Remember ``request_id`` until its caller stops waiting; False when it was seen already."""
        now = time.time()
        if len(self._seen) > 1024:
            self._seen = {k: t for k, t in self._seen.items() if t > now}
        if request_id in self._seen:
            return False
        try:
            until = float(expires)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            until = now
        self._seen[request_id] = min(until, now + 3600.0) + CLOCK_SKEW_S
        return True


def remote_error(header: dict[str, Any]) -> LayercastError:
    """The typed error an answer describes: the same class when this build has it, else a ReplicaError."""
    status, name, message = str(header.get("status")), str(header.get("type")), str(header.get("message"))
    cls = getattr(errors, name, None)
    if (
        isinstance(cls, type)
        and issubclass(cls, LayercastError)
        and cls is not ReplicaError
        and cls.grpc_status == status
    ):
        try:
            return cls(message)
        except TypeError:  # a constructor taking other arguments
            pass
    return ReplicaError(status, message)
