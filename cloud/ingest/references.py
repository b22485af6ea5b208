"""The cloud's per-camera decoder state: the reference each camera's next predicted frame needs.

A camera's base layers are a low-delay video (``shared/codec/video.py``): an intra frame, then
predicted frames each coded against the frame before. The cloud decodes each camera's frames in
sequence order and keeps, per camera, the last decoded base (its ŷ_b and the CRC32 of its bytes,
which the next P-frame's header names).

When the live reference is not the one a P-frame names (after a cloud restart, on a replica the
camera just moved to, after a frame that failed), the chain is rebuilt from the frames the cloud
stored: from the last intra frame at or before the reference up to it, decoded in order. Only when
the store cannot give it either (the frames never reached this cloud) is the P-frame refused with
``ReferenceMismatch`` and the camera asked for an intra frame.

Operators' previews, enhancements and Infer calls on a stored P-frame need its ŷ_b too: the same
chain, through a bounded LRU cache of decoded frames so that an Enhance does not decode the whole
GOP again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from layercast.shared.codec.bitstream import LayerKind, frame_ref_of
from layercast.shared.errors import LayercastError, ReferenceMismatch

#: ``load_chain(camera, sequence)``: the stored base bitstreams of ``camera`` from its last intra
#: frame at or before ``sequence`` up to ``sequence``, as (sequence, bytes) in sequence order
#: ([] when the store has none of them).
ChainLoader = Callable[[str, int], Sequence[tuple[int, bytes]]]

#: Frames decoded for previews and chains, kept per cloud process (a 256x192 ŷ_b is ~50 KB in float32).
DEFAULT_CACHE_FRAMES = 64


class References:
    """Live references per camera, and decoded stored frames (thread-safe)."""

    def __init__(
        self, codec: Any, load_chain: ChainLoader | None = None, cache_frames: int = DEFAULT_CACHE_FRAMES
    ):
        self.codec = codec
        self.load_chain = load_chain
        self.cache_frames = cache_frames
        self._live: dict[str, tuple[int, Any]] = {}  # camera -> (sequence, DecodedBase)
        self._cache: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.rebuilt = 0  # chains rebuilt from the store
        self.chain_frames_decoded = 0

    # -- live state --------------------------------------------------------------------------------
    def live(self, camera: str) -> Any | None:
        with self._lock:
            item = self._live.get(camera)
        return None if item is None else item[1]

    def forget(self, camera: str) -> None:
        with self._lock:
            self._live.pop(camera, None)

    def decoded(self, camera: str, sequence: int, dec: Any) -> None:
        """Record frame ``sequence`` of ``camera`` as decoded (the next one's reference if newest)."""
        with self._lock:
            cur = self._live.get(camera)
            if cur is None or sequence >= cur[0]:
                self._live[camera] = (sequence, dec)
            self._remember((camera, sequence), dec)

    def _remember(self, key: tuple[str, int], dec: Any) -> None:
        self._cache[key] = dec
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_frames:
            self._cache.popitem(last=False)

    def cached(self, camera: str, sequence: int) -> Any | None:
        with self._lock:
            dec = self._cache.get((camera, sequence))
            if dec is not None:
                self._cache.move_to_end((camera, sequence))
            return dec

    # -- references of predicted frames --------------------------------------------------------------
    def reference_for(self, camera: str, sequence: int, header: Any) -> Any | None:
        """The decoded base a frame of ``camera`` needs (None for an intra frame).

        Raises ReferenceMismatch when neither the live state nor the store holds the frame its
        header names."""
        if header.kind is not LayerKind.PREDICTED:
            return None
        live = self.live(camera)
        if live is not None and live.frame_ref == header.frame_ref:
            return live
        ref = self._from_store(camera, sequence - 1, header.frame_ref)
        if ref is None:
            held = "none" if live is None else f"{live.frame_ref:08x}"
            raise ReferenceMismatch(
                f"frame {sequence} of {camera} is predicted from base layer {header.frame_ref:08x}; "
                f"this cloud holds {held} and has not stored it: the camera must send an intra frame"
            )
        return ref

    def _from_store(self, camera: str, sequence: int, frame_ref: int) -> Any | None:
        if self.load_chain is None or sequence < 1:
            return None
        chain = list(self.load_chain(camera, sequence))
        if not chain or frame_ref_of(chain[-1][1]) != frame_ref:
            return None
        dec = self._decode_chain(camera, chain)
        if dec is not None:
            self.rebuilt += 1
        return dec

    def _decode_chain(self, camera: str, chain: Sequence[tuple[int, bytes]]) -> Any | None:
        """Decode stored frames in order (skipping those in the cache); the last one's DecodedBase."""
        ref = None
        for seq, data in chain:
            dec = self.cached(camera, seq)
            if dec is None or dec.frame_ref != frame_ref_of(data):
                try:
                    dec = self.codec.decode_base(data, reference=ref)
                except LayercastError:
                    return None
                self.chain_frames_decoded += 1
                with self._lock:
                    self._remember((camera, seq), dec)
            ref = dec
        return ref

    # -- stored frames for operators -------------------------------------------------------------------
    def decode_stored(self, camera: str, sequence: int, data: bytes) -> Any:
        """ŷ_b of a stored frame (intra: decoded as is; predicted: through its chain); raises its error."""
        dec = self.cached(camera, sequence)
        if dec is not None and dec.frame_ref == frame_ref_of(data):
            return dec
        if data[3:4] != bytes([LayerKind.PREDICTED]):
            dec = self.codec.decode_base(data)
        else:
            chain = list(self.load_chain(camera, sequence)) if self.load_chain is not None else []
            if not chain or chain[-1][0] != sequence:
                raise ReferenceMismatch(
                    f"frame {sequence} of {camera} is a predicted frame whose intra frame is not stored here"
                )
            dec = self._decode_chain(camera, chain)
            if dec is None:
                raise ReferenceMismatch(
                    f"the frames frame {sequence} of {camera} is predicted from do not decode"
                )
        with self._lock:
            self._remember((camera, sequence), dec)
        return dec
