"""The cloud's adapter over the codec facade: check, decode, infer, convert to a Result.

Images around it live elsewhere: previews and reconstructions for operators in
:mod:`layercast.cloud.results.previews`, PNG and depth-map encoding in
:mod:`layercast.cloud.results.png`, an Analytics.Infer image turned into a
base bitstream in :mod:`layercast.cloud.ingest.images`.

Every call here is blocking (torch); the batcher and the servicers run them on
worker threads. The header of every bitstream is parsed and checked once, by
:meth:`InferenceEngine.check_base` (``codec.check_base`` plus the configured
pixel limit), before anything is decoded, so a frame that claims a
100000×100000 image is refused before any large allocation; a predicted frame's
header, which names its reference instead of a size, is then bound to the
reference's header (:meth:`InferenceEngine.bind`, by the pipeline, which keeps each
camera's newest stored header); the batch path decodes the
:class:`~layercast.cloud.ingest.frame.Frame` records built from it.

A camera's base layers are a low-delay video: a predicted frame decodes against the frame
before it. The engine keeps that state in :class:`~layercast.cloud.ingest.references.References`
(the live reference per camera, rebuilt from the stored chain when it is missing); the batcher
hands it each camera's frames one at a time and in order. A predicted frame whose reference
neither is live nor can be rebuilt fails with ``ReferenceMismatch`` (FAILED_PRECONDITION); a
frame that fails to decode drops its camera's live reference.

Per-item failures never fail a batch: :meth:`InferenceEngine.run_batch`
returns a :class:`~layercast.shared.errors.LayercastError` in that item's
place (INVALID_ARGUMENT for a bad bitstream, FAILED_PRECONDITION naming the
model id for a model the cloud lacks).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from layercast.cloud.ingest.frame import Frame
from layercast.cloud.ingest.references import ChainLoader, References
from layercast.cloud.results.png import depth_to_proto
from layercast.shared.clock import now_us
from layercast.shared.codec.bitstream import Bitstream, Header, LayerKind
from layercast.shared.errors import (
    CorruptBitstream,
    ImageTooLarge,
    LayercastError,
    NotReady,
    ReferenceMismatch,
    UnknownModel,
)
from layercast.shared.rpc import common_pb2

log = logging.getLogger(__name__)

_BACKGROUND_NAMES = {"__background__", "background", "__bg__"}


class CodecLike(Protocol):
    """The part of ``layercast.shared.codec.ScalableCodec`` the cloud uses."""

    base_model_id: str
    enhancement_model_id: str | None
    task: str
    class_names: list[str]

    def check_base(self, data: bytes) -> Any: ...
    def decode_base_batch(
        self,
        items: Sequence[Bitstream],
        return_exceptions: bool = False,
        references: Sequence[Any] | None = None,
    ) -> list[Any]: ...
    def decode_base(self, data: bytes, reference: Any = None) -> Any: ...
    def infer(self, decs: Sequence[Any]) -> list[Any]: ...
    def preview(self, dec: Any) -> np.ndarray: ...
    def reconstruct(self, dec: Any, data: bytes) -> np.ndarray: ...
    def encode_batch(self, images: Sequence[np.ndarray], layers: str = "all") -> list[Any]: ...


class MissingReference(ReferenceMismatch):
    """A predicted frame whose reference this cloud neither holds nor can rebuild; ``reason`` is
    the ``IntraRequest.Reason`` name to ask its camera for an intra frame with."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class InferenceEngine:
    """One loaded codec, used by the batcher (decode + infer) and the operator API."""

    def __init__(
        self,
        codec: CodecLike | None = None,
        *,
        max_pixels: int = 4096 * 4096,
        depth_encoding: str = "png16",
        load_chain: ChainLoader | None = None,
    ) -> None:
        self._codec = codec
        self.max_pixels = max_pixels
        self.depth_encoding = depth_encoding
        #: Per-camera decoder state; ``load_chain`` reads a camera's stored frames (any thread).
        self.references = References(codec, load_chain=load_chain)
        #: Frames of cameras decoded, by kind ("intra", "predicted").
        self.decoded_by_kind: collections.Counter[str] = collections.Counter()
        self._failed: set[str] = set()  # cameras whose last frame failed to decode

    @property
    def loaded(self) -> bool:
        return self._codec is not None

    @property
    def codec(self) -> CodecLike:
        if self._codec is None:
            raise NotReady("the model is still loading")
        return self._codec

    def attach(self, codec: CodecLike) -> None:
        """Use ``codec`` from now on (the server loads it after binding its port)."""
        self._codec = codec
        self.references.codec = codec

    @property
    def base_model_id(self) -> str:
        return self.codec.base_model_id

    @property
    def enhancement_model_id(self) -> str:
        return self.codec.enhancement_model_id or ""

    @property
    def temporal_model_id(self) -> str:
        """The P-frame model's id ("" when the codec decodes intra frames only)."""
        return getattr(self.codec, "temporal_model_id", None) or ""

    @property
    def task(self) -> str:
        return self.codec.task

    # -- checks ---------------------------------------------------------------------------------
    def check_base(self, data: bytes) -> Bitstream:
        """Parse and check a base bitstream's header (no decoding): raises BitstreamError,
        UnknownModel (FAILED_PRECONDITION, naming the id) or ImageTooLarge. A predicted frame's
        header comes back unbound (its bytes checked): :meth:`bind` gives it its reference's size."""
        header = self.codec.check_base(data)
        self._check_size(header)
        return Bitstream(header, bytes(data))

    def bind(self, bitstream: Bitstream, reference: Header) -> Bitstream:
        """A predicted frame with the size and model of ``reference``, the header of the base layer
        it names (ReferenceMismatch, FAILED_PRECONDITION, for any other)."""
        header = bitstream.header.bind(reference)
        self._check_size(header)
        return Bitstream(header, bitstream.data)

    def _check_size(self, header: Header) -> None:
        if header.width * header.height > self.max_pixels:
            raise ImageTooLarge(
                f"bitstream claims a {header.width}x{header.height} image, above the limit of {self.max_pixels} pixels"
            )

    def require_model(self, model_id: str) -> None:
        """Raise UnknownModel unless ``model_id`` is the base model this cloud decodes."""
        if model_id != self.base_model_id:
            raise UnknownModel(
                f"base model {model_id or '(none)'} is not available in this cloud (it has {self.base_model_id})"
            )

    def require_temporal_model(self, model_id: str) -> None:
        """Raise UnknownModel unless ``model_id`` is "" (intra frames only) or the temporal model
        this cloud decodes predicted frames with."""
        if model_id and model_id != self.temporal_model_id:
            raise UnknownModel(
                f"temporal model {model_id} is not available in this cloud "
                f"(it has {self.temporal_model_id or 'none'})"
            )

    # -- batch path -----------------------------------------------------------------------------
    def run_batch(self, frames: Sequence[Frame]) -> list[common_pb2.Result | LayercastError]:
        """Decode and infer a batch of checked frames (at most one per camera, each camera's in
        order); a failing item yields its error, the others their Result."""
        refs: list[Any] = [None] * len(frames)
        decoded: list[Any] = [None] * len(frames)
        todo: list[int] = []
        for i, f in enumerate(frames):
            try:
                refs[i] = self.references.reference_for(f.camera_id, f.sequence, f.header)
            except ReferenceMismatch as exc:
                if f.camera_id in self._failed:
                    reason = "DECODE_FAILED"
                elif self.references.live(f.camera_id) is None:
                    reason = "NO_REFERENCE"
                else:
                    reason = "REFERENCE_MISMATCH"
                decoded[i] = MissingReference(str(exc), reason)
                continue
            todo.append(i)
        if todo:
            out_todo = self._decode([frames[i].bitstream for i in todo], [refs[i] for i in todo])
            for i, d in zip(todo, out_todo, strict=True):
                decoded[i] = d
        for f, d in zip(frames, decoded, strict=True):
            if f.sequence == 0:  # a one-off image, not part of a camera's stream
                continue
            if isinstance(d, BaseException):
                self.references.forget(f.camera_id)
                if not isinstance(d, ReferenceMismatch):
                    self._failed.add(f.camera_id)
            else:
                self._failed.discard(f.camera_id)
                self.references.decoded(f.camera_id, f.sequence, d)
                self.decoded_by_kind["predicted" if f.header.kind is LayerKind.PREDICTED else "intra"] += 1
        good = [i for i, d in enumerate(decoded) if not isinstance(d, BaseException)]
        out: list[common_pb2.Result | LayercastError] = list(decoded)  # errors stay in place
        if good:
            results = self.codec.infer([decoded[i] for i in good])
            done = now_us()
            for i, tr in zip(good, results, strict=True):
                out[i] = self.to_result(frames[i], tr, processed_us=done)
        return out

    def _decode(self, items: list[Bitstream], refs: list[Any]) -> list[Any]:
        try:
            return self.codec.decode_base_batch(items, return_exceptions=True, references=refs)
        except Exception:
            log.warning("batch decode failed; decoding the %d frames one by one", len(items), exc_info=True)
        out: list[Any] = []
        for item, ref in zip(items, refs, strict=True):
            try:
                out.append(self.codec.decode_base_batch([item], return_exceptions=True, references=[ref])[0])
            except LayercastError as exc:
                out.append(exc)
            except Exception as exc:  # a payload the entropy decoder chokes on
                log.warning("frame failed to decode", exc_info=True)
                out.append(CorruptBitstream(f"bitstream does not decode: {type(exc).__name__}: {exc}"))
        return out

    def to_result(self, frame: Frame, task_result: Any, *, processed_us: int) -> common_pb2.Result:
        """A TaskResult as a ``layercast.v1.Result``."""
        w, h = frame.width, frame.height
        res = common_pb2.Result(
            camera_id=frame.camera_id,
            sequence=frame.sequence,
            capture_time_us=frame.capture_time_us,
            processed_time_us=processed_us,
            model_id=self.base_model_id,
            base_bytes=frame.nbytes,
            base_bpp=8.0 * frame.nbytes / max(1, w * h),
            width=w,
            height=h,
            task=self.task,
        )
        boxes = np.asarray(task_result.boxes, dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(task_result.labels).reshape(-1)
        scores = np.asarray(task_result.scores, dtype=np.float32).reshape(-1)
        for (x1, y1, x2, y2), label, score in zip(
            boxes.tolist(), labels.tolist(), scores.tolist(), strict=True
        ):
            idx, name = self._class(int(label))
            res.boxes.add(x1=x1, y1=y1, x2=x2, y2=y2, class_id=idx, class_name=name, score=score)
        if task_result.depth is not None:
            res.depth.CopyFrom(depth_to_proto(task_result.depth, self.depth_encoding))
        return res

    def _class(self, label: int) -> tuple[int, str]:
        """Detector labels are 1..K (0 = background); class_id indexes ``class_names``."""
        names = self.codec.class_names
        if names and names[0] in _BACKGROUND_NAMES:
            idx = label
        else:
            idx = label - 1
        name = names[idx] if 0 <= idx < len(names) else str(label)
        return max(idx, 0), name

    def decode_one(self, base: bytes) -> Any:
        """One intra base bitstream, checked and decoded; raises its error."""
        out = self.codec.decode_base_batch([self.check_base(base)], return_exceptions=True)[0]
        if isinstance(out, BaseException):
            raise out
        return out

    def decode_stored(self, camera_id: str, sequence: int, base: bytes) -> Any:
        """The decoded base of a stored frame of ``camera_id`` (a predicted one through its stored
        chain); raises its error."""
        self.check_base(base)
        return self.references.decode_stored(camera_id, sequence, base)

    def warm_up(self) -> None:
        """One encode, decode and inference on a small image, so the first frame is not slow."""
        rng = np.random.default_rng(0)
        img = rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
        base = self.codec.encode_batch([img], layers="base")[0].base
        self.run_batch([Frame("warm-up", 0, 0, 0, self.check_base(base))])


def load_registry_codec(model: str, *, device: str | None, runtime: str = "onnxruntime") -> CodecLike:
    """Load ``model`` from the registry (its base and the enhancement trained on it), its CPU
    transforms run by ``runtime`` (shared/codec/runtime.py)."""
    from layercast.shared.codec import load_codec

    return load_codec(model, device=device or "auto", runtime=runtime)
