"""Typed errors shared by every layer of layercast.

Each error names what is wrong in its message and maps to one gRPC status code
(see ``grpc_status``) so that servicers translate them without guessing.
"""

from __future__ import annotations


class LayercastError(Exception):
    """Base of every error layercast raises on purpose."""

    #: Name of the matching ``grpc.StatusCode`` member.
    grpc_status: str = "INTERNAL"


class BitstreamError(LayercastError):
    """A bitstream that cannot be parsed or decoded."""

    grpc_status = "INVALID_ARGUMENT"


class NotABitstream(BitstreamError):
    """The bytes do not start with the layercast magic."""


class TruncatedBitstream(BitstreamError):
    """Fewer bytes than the header announces."""


class CorruptBitstream(BitstreamError):
    """A checksum does not match or a field is out of range."""


class UnsupportedVersion(BitstreamError):
    """A container format version this build does not read."""

    grpc_status = "FAILED_PRECONDITION"


class DecodeMismatch(BitstreamError):
    """The decoded symbols differ from the encoded ones (checksum over symbols).

    This is how a cross-machine numerical divergence of the entropy model is
    reported, rather than as a silently wrong image.
    """

    grpc_status = "DATA_LOSS"


class FrameMismatch(BitstreamError):
    """An enhancement bitstream that does not belong to the given base bitstream."""


class ReferenceMismatch(BitstreamError):
    """A predicted frame whose reference (the previous frame's base layer) is missing or another one.

    The decoder never decodes a P-frame against a wrong reference; the sender must send an intra frame."""

    grpc_status = "FAILED_PRECONDITION"


class UnknownModel(LayercastError):
    """A model id or name that is not in the registry."""

    grpc_status = "FAILED_PRECONDITION"


class InvalidImage(LayercastError):
    """An input image that cannot be encoded (unreadable, wrong mode, empty)."""

    grpc_status = "INVALID_ARGUMENT"


class ImageTooLarge(InvalidImage):
    """Image dimensions above the configured limit, refused before allocating."""

    grpc_status = "RESOURCE_EXHAUSTED"


class ConfigError(LayercastError):
    """Configuration that fails validation; the message says which key and why."""

    grpc_status = "INVALID_ARGUMENT"


# --- service errors (appended by the cloud helper) -------------------------


class Unauthenticated(LayercastError):
    """Missing, unknown or wrong credentials."""

    grpc_status = "UNAUTHENTICATED"


class PermissionDenied(LayercastError):
    """Valid credentials that do not allow this action (e.g. a camera speaking for another)."""

    grpc_status = "PERMISSION_DENIED"


class CameraOffline(LayercastError):
    """The camera holds no open stream, so nothing can be asked of it now."""

    grpc_status = "UNAVAILABLE"


class FrameNotFound(LayercastError):
    """A frame that is not (or no longer) stored where it was looked for."""

    grpc_status = "NOT_FOUND"


class FrameExpired(FrameNotFound):
    """A frame past a retention window (the edge's enhancement store or the cloud's store)."""


class EdgeStoreFailed(LayercastError):
    """The edge could not read its enhancement store (disk full, unreadable)."""

    grpc_status = "UNAVAILABLE"


class RequestTimeout(LayercastError):
    """A peer did not answer within the allowed time."""

    grpc_status = "DEADLINE_EXCEEDED"


class ServiceClosing(LayercastError):
    """The service is shutting down and accepts no new work."""

    grpc_status = "UNAVAILABLE"


class StorageError(LayercastError):
    """A persistent store (outbox, enhancement store, frame store) cannot be read or written.

    The message names the store and the path, and says what failed (unwritable,
    corrupt, missing). Callers count it and keep the stream going where they can.
    """

    grpc_status = "INTERNAL"


class StorageFull(StorageError):
    """A persistent store ran out of space (disk full, or a record larger than its budget)."""

    grpc_status = "RESOURCE_EXHAUSTED"


class NotReady(LayercastError):
    """The service is still starting (loading or warming up its model)."""

    grpc_status = "UNAVAILABLE"


class MalformedMessage(LayercastError):
    """A request whose bytes do not parse as its protobuf message type (corrupt wire format, bad UTF-8)."""

    grpc_status = "INVALID_ARGUMENT"


# --- scale-out (several cloud replicas sharing state through Redis) -----------


class FrameNotStored(FrameNotFound):
    """A frame that is not in this process's store (it may be in another cloud replica's)."""


class ClusterUnavailable(LayercastError):
    """The store the cloud replicas share (Redis) cannot be reached."""

    grpc_status = "UNAVAILABLE"


class ReplicaError(LayercastError):
    """An error raised on another cloud replica, carried back with the gRPC status it had there."""

    def __init__(self, grpc_status: str, message: str) -> None:
        super().__init__(message)
        self.grpc_status = grpc_status


class InvalidArgument(LayercastError):
    """A request field out of bounds (too long, too many entries)."""

    grpc_status = "INVALID_ARGUMENT"


class Overloaded(LayercastError):
    """A bound on concurrent work is reached; the caller may retry later."""

    grpc_status = "RESOURCE_EXHAUSTED"
