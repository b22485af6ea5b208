"""The Operator API across replicas: answered here when this replica can, else by the one that can.

* ListCameras: every live replica's cameras, merged; ``online`` = some replica holds the stream.
* ListFrames: this replica's frames of the camera and those of the replicas that hold the camera
  or stored its frames, merged newest first.
* GetPreview / Enhance: here when this replica stores the frame, else at the replica holding the
  camera, else at the other replicas that stored frames of it. The enhancement layer itself comes
  from the camera's stream, wherever it is (:class:`ClusterEnhancements`).

Every replica serves the plain, local calls to the others (:func:`serve_operator`); a forwarded
call is never forwarded again, except the one hop to fetch an enhancement layer from the replica
holding the camera.

A forwarded call carries, signed with it, the :class:`~.signing.Caller` it is made for (operator,
role, on-behalf-of, request id). The replica doing the work checks it with the same role rules as a
local call: Enhance and the enhancement-layer fetch need an enhancer, by the role the calling
replica gave and by this replica's own ``auth.enhancers``; refused calls answer PERMISSION_DENIED
(UNAUTHENTICATED without a caller) and are counted (``unauthorised``). Each of those two, allowed
or refused, is a line in this replica's audit log (``"api": "cluster"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from google.protobuf.message import Message

from layercast.cloud.cluster.ownership import Ownership
from layercast.cloud.cluster.rpc import Handler, ReplicaRpc
from layercast.cloud.cluster.signing import Caller
from layercast.cloud.rpc.servicers.operator import LocalOperator
from layercast.cloud.security.audit import AuditLog
from layercast.cloud.security.roles import ENHANCER_METHODS, OperatorRoles
from layercast.cloud.sessions import EnhancementRouter, SessionRegistry
from layercast.shared.errors import (
    ClusterUnavailable,
    FrameNotStored,
    LayercastError,
    PermissionDenied,
    RequestTimeout,
    Unauthenticated,
)
from layercast.shared.rpc import operator_pb2

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

#: Operations one replica serves to the others.
LIST_CAMERAS, LIST_FRAMES, PREVIEW, ENHANCE, FETCH_ENHANCEMENT = (
    "list_cameras", "list_frames", "preview", "enhance", "fetch_enhancement",
)  # fmt: skip


ENHANCE_METHOD = "/layercast.v1.Operator/Enhance"
assert ENHANCE_METHOD in ENHANCER_METHODS


class ForwardedGate:
    """Authorises and audits forwarded calls on the replica doing the work."""

    def __init__(self, rpc: ReplicaRpc, roles: OperatorRoles, audit: AuditLog | None) -> None:
        self._rpc = rpc
        self._roles = roles
        self._audit = audit

    def check(self, caller: Caller | None, *, enhancer: bool) -> None:
        """Raise UNAUTHENTICATED / PERMISSION_DENIED unless ``caller`` may make the call."""
        if caller is None:
            self._rpc.rejections.add("unauthorised", "a forwarded call naming no caller")
            raise Unauthenticated("a forwarded call must name its caller")
        if enhancer and not (
            caller.role == "enhancer" and self._roles.allows(caller.operator, ENHANCE_METHOD)
        ):
            self._rpc.rejections.add("unauthorised", "a forwarded Enhance of a viewer")
            raise PermissionDenied(
                f"operator {caller.operator or 'anonymous'!r} has the viewer role: Enhance needs the enhancer role"
            )

    def audited(self, op: str, needs_enhancer: bool, handler: Handler) -> Handler:
        """``handler`` behind the role check, with an audit line when it hands out a full picture."""

        async def run(payload: bytes, timeout_s: float, caller: Caller | None) -> bytes:
            t0, status, body = time.perf_counter(), "OK", b""
            try:
                self.check(caller, enhancer=needs_enhancer)
                body = await handler(payload, timeout_s, caller)
                return body
            except LayercastError as exc:
                status = exc.grpc_status
                raise
            except BaseException:
                status = "INTERNAL"
                raise
            finally:
                if needs_enhancer:
                    self._record(op, payload, caller, status, time.perf_counter() - t0)

        return run

    def _record(self, op: str, payload: bytes, caller: Caller | None, status: str, elapsed: float) -> None:
        if self._audit is None:
            return
        ref = operator_pb2.FrameRef()
        try:
            if op == ENHANCE:
                ref = operator_pb2.EnhanceRequest.FromString(payload).frame
            else:
                ref = operator_pb2.FrameRef.FromString(payload)
        except Exception:  # the line is still written, without a frame
            pass
        c = caller or Caller()
        record: dict[str, Any] = {
            "api": "cluster",
            "op": op,
            "user": c.user if caller is not None else "-",
            "operator": c.operator,
            "on_behalf_of": c.on_behalf_of,
            "role": c.role,
            "camera_id": ref.camera_id[:128],
            "sequence": int(ref.sequence),
            "outcome": "ok" if status == "OK" else ("refused" if status == "PERMISSION_DENIED" else "error"),
            "grpc_status": status,
            "request_id": c.request_id,
            "replica": self._rpc.replica_id,
            "elapsed_s": round(elapsed, 4),
        }
        try:
            self._audit.write(**record)
        except OSError as exc:
            log.error("audit log %s: cannot write a line: %s", self._audit.path, exc.strerror or exc)


def serve_operator(
    rpc: ReplicaRpc,
    local: LocalOperator,
    router: EnhancementRouter,
    *,
    roles: OperatorRoles,
    audit: AuditLog | None,
) -> None:
    """Answer the other replicas' calls from this replica alone, for the callers they name."""
    gate = ForwardedGate(rpc, roles, audit)

    async def list_cameras(payload: bytes, _timeout_s: float, _caller: Caller | None) -> bytes:
        request = operator_pb2.ListCamerasRequest.FromString(payload)
        return (await local.list_cameras(request)).SerializeToString()

    async def list_frames(payload: bytes, _timeout_s: float, _caller: Caller | None) -> bytes:
        request = operator_pb2.ListFramesRequest.FromString(payload)
        return (await local.list_frames(request)).SerializeToString()

    async def preview(payload: bytes, _timeout_s: float, _caller: Caller | None) -> bytes:
        return (await local.preview(operator_pb2.FrameRef.FromString(payload))).SerializeToString()

    async def enhance(payload: bytes, timeout_s: float, caller: Caller | None) -> bytes:
        request = operator_pb2.EnhanceRequest.FromString(payload)
        with forwarding_for(caller):
            return (await local.enhance(request, timeout_s)).SerializeToString()

    async def fetch_enhancement(payload: bytes, timeout_s: float, _caller: Caller | None) -> bytes:
        ref = operator_pb2.FrameRef.FromString(payload)
        return await router.fetch(ref.camera_id, ref.sequence, timeout_s=timeout_s)

    rpc.handle(LIST_CAMERAS, gate.audited(LIST_CAMERAS, False, list_cameras))
    rpc.handle(LIST_FRAMES, gate.audited(LIST_FRAMES, False, list_frames))
    rpc.handle(PREVIEW, gate.audited(PREVIEW, False, preview))
    rpc.handle(ENHANCE, gate.audited(ENHANCE, True, enhance))
    rpc.handle(FETCH_ENHANCEMENT, gate.audited(FETCH_ENHANCEMENT, True, fetch_enhancement))


#: The caller a forwarded Enhance runs for, so its own hop to the camera's replica names it too.
_forwarded_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "layercast_forwarded_caller", default=None
)


@contextlib.contextmanager
def forwarding_for(caller: Caller | None) -> Iterator[None]:
    token = _forwarded_caller.set(caller)
    try:
        yield
    finally:
        _forwarded_caller.reset(token)


def current_caller(roles: OperatorRoles) -> Caller:
    """Who the call being handled is for: a forwarded call's caller, else the gRPC caller
    (named by the token interceptor, its role from ``roles``)."""
    forwarded = _forwarded_caller.get()
    if forwarded is not None:
        return forwarded
    from layercast.cloud.rpc.interceptors import operator_name, request_id
    from layercast.cloud.security.enhance_audit import acting_for

    name = operator_name.get()
    role = roles.role_of(name)
    # Only an enhancer may speak for someone (as in the gRPC audit line).
    on_behalf = acting_for.get() if role == "enhancer" else ""
    return Caller(operator=name, role=role, on_behalf_of=on_behalf, request_id=request_id.get())


class ClusterEnhancements:
    """Enhancement layers from this replica's camera streams, else from the replica holding the camera."""

    def __init__(
        self,
        router: EnhancementRouter,
        registry: SessionRegistry,
        ownership: Ownership,
        rpc: ReplicaRpc,
        *,
        forward_timeout_s: float,
        caller: Callable[[], Caller],
    ) -> None:
        self._caller = caller
        self._router = router
        self._registry = registry
        self._ownership = ownership
        self._rpc = rpc
        self._forward_timeout_s = forward_timeout_s

    async def fetch(self, camera_id: str, sequence: int, *, timeout_s: float | None = None) -> bytes:
        session = self._registry.get(camera_id)
        if session is None or session.closed:
            owner = await self._ownership.owner(camera_id)
            if owner is not None and owner != self._rpc.replica_id:
                ref = operator_pb2.FrameRef(camera_id=camera_id, sequence=sequence)
                wait = (
                    self._forward_timeout_s if timeout_s is None else min(timeout_s, self._forward_timeout_s)
                )
                return await self._rpc.call(
                    owner, FETCH_ENHANCEMENT, ref.SerializeToString(), timeout_s=wait, caller=self._caller()
                )
        return await self._router.fetch(camera_id, sequence, timeout_s=timeout_s)


class ClusterOperator:
    """:class:`~layercast.cloud.rpc.servicers.operator.OperatorApi` over every replica."""

    def __init__(
        self,
        local: LocalOperator,
        ownership: Ownership,
        rpc: ReplicaRpc,
        live_replicas: Callable[[], Awaitable[set[str]]],
        *,
        forward_timeout_s: float,
        caller: Callable[[], Caller],
    ) -> None:
        self._caller = caller
        self._local = local
        self._ownership = ownership
        self._rpc = rpc
        self._live_replicas = live_replicas
        self._forward_timeout_s = forward_timeout_s

    @property
    def replica_id(self) -> str:
        return self._rpc.replica_id

    async def list_cameras(
        self, request: operator_pb2.ListCamerasRequest
    ) -> operator_pb2.ListCamerasResponse:
        mine = await self._local.list_cameras(request)
        try:
            peers = sorted(await self._live_replicas() - {self.replica_id})
            answers = [
                mine,
                *await self._ask_all(peers, LIST_CAMERAS, request, operator_pb2.ListCamerasResponse),
            ]
            cameras = merge_cameras(answers)
            owners = await self._ownership.owners(c.camera_id for c in cameras)
        except ClusterUnavailable as exc:
            log.warning("ListCameras answered with this replica's cameras only: %s", exc)
            return mine
        for camera in cameras:
            camera.online = owners.get(camera.camera_id) is not None
        return operator_pb2.ListCamerasResponse(cameras=cameras)

    async def list_frames(self, request: operator_pb2.ListFramesRequest) -> operator_pb2.ListFramesResponse:
        mine = await self._local.list_frames(request)
        try:
            holders = await self.holders(request.camera_id)
        except ClusterUnavailable as exc:
            log.warning("ListFrames answered with this replica's frames only: %s", exc)
            return mine
        if not holders:
            return mine
        answers = [mine, *await self._ask_all(holders, LIST_FRAMES, request, operator_pb2.ListFramesResponse)]
        return operator_pb2.ListFramesResponse(frames=merge_frames(answers, self._local.limit_of(request)))

    async def preview(self, request: operator_pb2.FrameRef) -> operator_pb2.Image:
        return await self._where_stored(
            request.camera_id,
            lambda: self._local.preview(request),
            PREVIEW,
            request,
            operator_pb2.Image,
            self._forward_timeout_s,
        )

    async def enhance(
        self, request: operator_pb2.EnhanceRequest, timeout_s: float | None
    ) -> operator_pb2.EnhanceResponse:
        budget = self._forward_timeout_s if timeout_s is None else min(timeout_s, self._forward_timeout_s)
        return await self._where_stored(
            request.frame.camera_id,
            lambda: self._local.enhance(request, timeout_s),
            ENHANCE,
            request,
            operator_pb2.EnhanceResponse,
            budget,
        )

    async def holders(self, camera_id: str) -> list[str]:
        """Other live replicas that may store frames of ``camera_id``: the one holding its stream
        first, then those that stored its frames before (replicas gone are forgotten)."""
        live = await self._live_replicas()
        owner = await self._ownership.owner(camera_id)
        stored = await self._ownership.stored_at(camera_id)
        gone = stored - live
        if gone:
            await self._ownership.forget_stored(camera_id, gone)
        order = [owner] if owner is not None else []
        order += sorted(stored & live)
        return list(dict.fromkeys(r for r in order if r != self.replica_id))

    async def _where_stored(
        self,
        camera_id: str,
        here: Callable[[], Awaitable[M]],
        op: str,
        request: Message,
        answer_type: type[M],
        budget_s: float,
    ) -> M:
        """``here()`` when this replica stores the frame, else ``op`` at the first replica that does."""
        try:
            return await here()
        except FrameNotStored as exc:
            missing: LayercastError = exc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        payload = request.SerializeToString()
        for replica in await self.holders(camera_id):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RequestTimeout(f"no cloud replica answered {op} within {budget_s:g} s")
            try:
                answer = await self._rpc.call(
                    replica, op, payload, timeout_s=remaining, caller=self._caller()
                )
                return answer_type.FromString(answer)
            except FrameNotStored as exc:
                missing = exc
        raise missing

    async def _ask_all(self, replicas: list[str], op: str, request: Message, answer_type: type[M]) -> list[M]:
        """``op`` at every replica at once; a replica that fails is left out (and logged)."""
        payload, caller = request.SerializeToString(), self._caller()
        answers = await asyncio.gather(
            *(
                self._rpc.call(r, op, payload, timeout_s=self._forward_timeout_s, caller=caller)
                for r in replicas
            ),
            return_exceptions=True,
        )
        out = []
        for replica, answer in zip(replicas, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, LayercastError):
                    raise answer
                log.warning("cloud replica %s left out of %s: %s", replica, op, answer)
            else:
                out.append(answer_type.FromString(answer))
        return out


def merge_cameras(answers: list[operator_pb2.ListCamerasResponse]) -> list[operator_pb2.Camera]:
    """One record per camera: counts summed, newest sequence and time kept, models from the replica
    that saw the camera last."""
    merged: dict[str, operator_pb2.Camera] = {}
    for answer in answers:
        for cam in answer.cameras:
            seen = merged.get(cam.camera_id)
            if seen is None:
                merged[cam.camera_id] = operator_pb2.Camera()
                merged[cam.camera_id].CopyFrom(cam)
                continue
            frames = seen.frames_stored + cam.frames_stored
            last_sequence = max(seen.last_sequence, cam.last_sequence)
            if cam.last_seen_us > seen.last_seen_us:
                seen.CopyFrom(cam)
            seen.frames_stored, seen.last_sequence = frames, last_sequence
    return [merged[k] for k in sorted(merged)]


def merge_frames(answers: list[operator_pb2.ListFramesResponse], limit: int) -> list[operator_pb2.FrameInfo]:
    """Newest first, one entry per sequence (``enhanced`` when any replica has it enhanced)."""
    merged: dict[int, operator_pb2.FrameInfo] = {}
    for answer in answers:
        for frame in answer.frames:
            seen = merged.get(frame.sequence)
            if seen is None:
                merged[frame.sequence] = frame
            elif frame.enhanced:
                seen.enhanced = True
    return [merged[s] for s in sorted(merged, reverse=True)[:limit]]
