"""The codec facade used by the edge, the cloud and the command line.

    codec = load_codec("default")                       # base (+ its enhancement) from the registry
    frames = codec.encode_batch([img])                  # EncodedFrame(base=bytes, enhancement=bytes | None)
    [dec] = codec.decode_base_batch([frames[0].base])   # needs only the base bytes
    codec.preview(dec)                                  # uint8 HxWx3 from the base alone
    codec.infer([dec])                                  # TaskResult per frame
    codec.reconstruct(dec, frames[0].enhancement)       # uint8 HxWx3, needs Ŷ_b

Video (a camera's frames, low delay): pass the previous frame's decoded base as ``references`` and
the base layer is coded as a predicted frame (P) against it, when the codec has a temporal model
(``shared/codec/temporal.py``; :class:`~layercast.shared.codec.video.VideoEncoder` keeps that state
per camera)::

    f0, = codec.encode_batch([img0])                             # intra; f0.decoded is its Ŷ_b
    f1, = codec.encode_batch([img1], references=[f0.decoded])    # P-frame against frame 0
    [d1] = codec.decode_base_batch([f1.base], references=[d0])   # needs frame 0's DecodedBase

Numerics: the analysis/synthesis transforms run in float32 on the selected device; the entropy
parameters (scale indexes and means on a 2⁻⁸ grid) come from each model's integer networks
(``shared/codec/intparams.py``), which give the same integers on every device, thread count and
batch by construction, so a bitstream decodes to the same symbols and ŷ (float32) anywhere. The
integer model is stored in the checkpoint and named by its model id; a checkpoint without one
(a training run's) gets it calibrated at load (``shared/codec/calibrate.py``), which gives it a new
model id. The symbol CRC in every header still turns any divergence into DecodeMismatch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from layercast.shared.codec import bitstream, intparams
from layercast.shared.codec.base_layer import BaseLayer
from layercast.shared.codec.bitstream import Bitstream, Header, LayerKind
from layercast.shared.codec.checkpoint import Checkpoint
from layercast.shared.codec.enhancement import EnhancementLayer
from layercast.shared.codec.entropy import load_weights
from layercast.shared.codec.registry import Registry, default_registry
from layercast.shared.codec.runtime import (
    DEFAULT_RUNTIME,
    check_runtime,
    exportable,
    keep_freed_memory,
    place,
)
from layercast.shared.codec.skip import default_skip_threshold
from layercast.shared.codec.temporal import TemporalLayer
from layercast.shared.device import select_device
from layercast.shared.errors import (
    DecodeMismatch,
    FrameMismatch,
    ImageTooLarge,
    InvalidImage,
    LayercastError,
    ReferenceMismatch,
    UnknownModel,
)

#: Integer models calibrated in this process, by the checkpoints' model ids (calibrating takes seconds).
_CALIBRATED: dict[tuple, dict[str, intparams.IntegerEntropy]] = {}


@dataclass
class DecodedBase:
    header: Header
    y_hat: torch.Tensor  # (1, M, h, w) float32 on the 2⁻⁸ grid, on the codec's device
    frame_ref: int  # CRC32 of the base bitstream: what its enhancement and the next P-frame refer to
    nbytes: int

    @property
    def size(self) -> tuple[int, int]:
        return self.header.height, self.header.width

    @property
    def kind(self) -> LayerKind:
        return self.header.kind


@dataclass(frozen=True)
class EncodedFrame:
    base: bytes  # an intra (LayerKind.BASE) or a predicted (LayerKind.PREDICTED) base layer
    enhancement: bytes | None
    decoded: DecodedBase | None = None  # the base exactly as a decoder gets it: the next P-frame's reference

    @property
    def kind(self) -> LayerKind:
        return LayerKind(self.base[3])


class ScalableCodec:
    """A trained base layer (with its task model) and optionally an enhancement layer."""

    def __init__(
        self,
        base: Checkpoint,
        enhancement: Checkpoint | None = None,
        temporal: Checkpoint | None = None,
        *,
        device: str | torch.device | None = "auto",
        max_pixels: int = bitstream.DEFAULT_MAX_PIXELS,
        runtime: str = DEFAULT_RUNTIME,
    ) -> None:
        if base.kind != "base":
            article = "an" if base.kind[:1] in "aeiou" else "a"
            raise UnknownModel(f"{base.name} is {article} {base.kind} checkpoint, not a base model")
        self.device = select_device(device)
        self.max_pixels = max_pixels
        self.base_ckpt = base
        self.config = base.config
        self.base_model_id = base.model_id
        self.base = BaseLayer(base.config)
        load_weights(self.base, base.state_dict)
        self.base.eval().to(self.device)
        task = base.task or {}
        self.task = task.get("kind", "none")
        self.class_names: list[str] = list(task.get("class_names") or [])
        self.task_model = self._build_task_model(task)
        # What runs the float32 transforms on this device (shared/codec/runtime.py).
        self.runtime = check_runtime(runtime) if self.device.type == "cpu" else "torch"
        if self.device.type == "cpu":
            keep_freed_memory()
        self._g_a = place(self.base.g_a, "g_a", self.runtime, self.device)
        self._g_simple = place(self.base.g_simple, "g_simple", self.runtime, self.device)
        self._g_s_task = place(self.base.g_s_task, "g_s_task", self.runtime, self.device)
        self._task_model = self.task_model
        if self.task_model is not None and exportable(self.task_model):
            self._task_model = place(self.task_model, "task model", self.runtime, self.device)
        self._g_a_e: Any = None
        self._g_s_e: Any = None

        self.enh_ckpt = enhancement
        self.enhancement: EnhancementLayer | None = None
        self.enhancement_model_id: str | None = None
        if enhancement is not None:
            info = enhancement.enhancement or {}
            self.enhancement = EnhancementLayer(
                enhancement.config,
                self.config.latent_channels,
                target=info.get("target", "reconstruction"),
                standalone=bool(info.get("standalone", False)),
            )
            load_weights(self.enhancement, enhancement.state_dict)
            self.enhancement.eval().to(self.device)
            self.enhancement_model_id = enhancement.model_id
            self._g_a_e = place(self.enhancement.g_a, "g_a_e", self.runtime, self.device)
            self._g_s_e = place(self.enhancement.g_s, "g_s_e", self.runtime, self.device)

        self.temporal: TemporalLayer | None = None
        self.temporal_model_id: str | None = None
        self.temporal_ckpt: Checkpoint | None = None
        if temporal is not None:
            if temporal.kind != "temporal":
                raise UnknownModel(f"{temporal.name} is a {temporal.kind} checkpoint, not a temporal model")
            self.temporal = TemporalLayer(temporal.config)
            load_weights(self.temporal, temporal.state_dict)
            self.temporal.eval().to(self.device)
            self.temporal.skip_threshold = default_skip_threshold(self.task)
            self.temporal_ckpt = temporal
        given_base_id = self.base_model_id
        self._attach_integer_models()
        self._check_links({given_base_id, self.base_model_id})

    def _check_links(self, base_ids: set[str]) -> None:
        """The enhancement and temporal models were trained on this base: they name its model id,
        with or without its integer model (one calibrated at load gives it a new id); their
        checkpoints then name the id the base has now."""
        for kind, ckpt in (("enhancement", self.enh_ckpt), ("temporal", self.temporal_ckpt)):
            if ckpt is None:
                continue
            info = getattr(ckpt, kind) or {}
            if info.get("base_model_id") not in base_ids:
                raise UnknownModel(
                    f"{kind} model {ckpt.model_id} was trained on base {info.get('base_model_id')}, "
                    f"not on {self.base_model_id}"
                )
            linked = replace(ckpt, **{kind: {**info, "base_model_id": self.base_model_id}})
            if kind == "enhancement":
                self.enh_ckpt = linked
            else:
                self.temporal_ckpt = linked

    def _attach_integer_models(self) -> None:
        """Give each layer's latent codec its integer entropy model: the checkpoint's, or one
        calibrated now (the checkpoint then carries it, and its model id names it)."""
        from layercast.shared.codec.calibrate import integer_models

        layers = {"base": self.base, "enhancement": self.enhancement, "temporal": self.temporal}
        ckpts = {"base": self.base_ckpt, "enhancement": self.enh_ckpt, "temporal": self.temporal_ckpt}
        missing = tuple(k for k, c in ckpts.items() if c is not None and not intparams.split(c.state_dict)[1])
        derived = {}
        if missing:
            key = (missing, *(c.model_id if c is not None else None for c in ckpts.values()))
            if key not in _CALIBRATED:
                _CALIBRATED[key] = integer_models(self.base, self.enhancement, self.temporal, missing)
            derived = _CALIBRATED[key]
        for kind, ckpt in ckpts.items():
            if ckpt is None:
                continue
            if kind in derived:
                ckpt = replace(ckpt, state_dict=intparams.with_integer(ckpt.state_dict, derived[kind]))
            model = intparams.IntegerEntropy.from_state(
                intparams.split(ckpt.state_dict)[1], intparams.spatial_taps(layers[kind].latent_codec)
            )
            layers[kind].latent_codec.integer = model  # type: ignore[union-attr]
            if kind == "base":
                self.base_ckpt, self.base_model_id = ckpt, ckpt.model_id
            elif kind == "enhancement":
                self.enh_ckpt, self.enhancement_model_id = ckpt, ckpt.model_id
            else:
                self.temporal_ckpt, self.temporal_model_id = ckpt, ckpt.model_id

    def _build_task_model(self, task: dict[str, Any]) -> torch.nn.Module | None:
        if not task.get("name"):
            return None
        from layercast.shared.tasks import get_task_model

        model = get_task_model(task["name"], **(task.get("kwargs") or {}))
        model.load_state_dict(task["state_dict"])
        return model.eval().to(self.device)

    # ------------------------------------------------------------------ images
    def _to_tensor(self, image: np.ndarray) -> torch.Tensor:
        if (
            not isinstance(image, np.ndarray)
            or image.dtype != np.uint8
            or image.ndim != 3
            or image.shape[2] != 3
        ):
            desc = (
                f"{image.dtype} array of shape {image.shape}"
                if isinstance(image, np.ndarray)
                else type(image).__name__
            )
            raise InvalidImage(f"expected an 8-bit RGB image (uint8, HxWx3), got {desc}")
        h, w = image.shape[:2]
        if h == 0 or w == 0:
            raise InvalidImage("empty image")
        if h > 65535 or w > 65535 or h * w > self.max_pixels:
            raise ImageTooLarge(f"image of {w}x{h} is above the limit of {self.max_pixels} pixels")
        return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float().div_(255)

    def _padded(self, n: int) -> int:
        """``n`` rounded up to the base's multiple: the size ``_pad`` pads an image side to."""
        return n + (-n) % self.config.pad_multiple

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Replicate-pad right and bottom to the base's multiple (``latent_shape`` assumes it)."""
        h, w = x.shape[-2:]
        pad_b, pad_r = self._padded(h) - h, self._padded(w) - w
        if pad_b or pad_r:
            x = F.pad(x, (0, pad_r, 0, pad_b), mode="replicate")
        return x

    @staticmethod
    def _to_uint8(x: torch.Tensor, h: int, w: int) -> np.ndarray:
        x = x[:, :h, :w].clamp(0, 1).mul(255).round().byte()
        return x.permute(1, 2, 0).cpu().numpy()

    # ------------------------------------------------------------------ encode
    @torch.no_grad()
    def encode_batch(
        self,
        images: Sequence[np.ndarray],
        layers: str = "all",
        references: Sequence[DecodedBase | None] | None = None,
    ) -> list[EncodedFrame]:
        """Encode images (any sizes; same-size images share a batch).

        ``references[i]``, when given (the previous frame's decoded base, e.g. ``EncodedFrame.decoded``
        of that frame), makes image i a predicted frame, if the codec has a temporal model and the
        reference has the image's size; otherwise image i is an intra frame."""
        tensors = [self._to_tensor(im) for im in images]
        refs = list(references) if references is not None else [None] * len(images)
        if len(refs) != len(images):
            raise ValueError(f"{len(refs)} references for {len(images)} images")
        out: list[EncodedFrame | None] = [None] * len(images)
        groups: dict[tuple[int, int, bool], list[int]] = defaultdict(list)
        for i, t in enumerate(tensors):
            h, w = t.shape[-2:]
            ref = refs[i]
            predicted = self.temporal is not None and ref is not None and ref.size == (h, w)
            groups[(h, w, predicted)].append(i)
        for (h, w, predicted), idx in groups.items():
            x = self._pad(torch.stack([tensors[i] for i in idx]).to(self.device))
            y = self._g_a(x)
            if predicted:
                cond = torch.cat([refs[i].y_hat for i in idx])  # type: ignore[union-attr]
                enc = self.temporal.latent_codec.compress(y, cond)  # type: ignore[union-attr]
                bases = [
                    bitstream.pack_predicted(refs[i].frame_ref, s, c)  # type: ignore[union-attr]
                    for i, s, c in zip(idx, enc["strings"], enc["checksums"], strict=True)
                ]
            else:
                enc = self.base.latent_codec.compress(y)
                bases = [
                    bitstream.pack_layer(LayerKind.BASE, self.base_model_id, w, h, s, c)
                    for s, c in zip(enc["strings"], enc["checksums"], strict=True)
                ]
            y_hat = enc["y_hat"]
            enhs: list[bytes | None] = [None] * len(idx)
            if self.enhancement is not None and layers == "all":
                e = self.enhancement
                enc_e = e.latent_codec.compress(self._g_a_e(x), e.condition(y_hat))
                enhs = [
                    bitstream.pack_layer(
                        LayerKind.ENHANCEMENT,
                        self.enhancement_model_id,
                        w,
                        h,
                        s,
                        c,
                        frame_ref=bitstream.frame_ref_of(b),
                    )
                    for b, s, c in zip(bases, enc_e["strings"], enc_e["checksums"], strict=True)
                ]
            for j, i in enumerate(idx):
                b = bases[j]
                ref_header = refs[i].header if predicted else None  # type: ignore[union-attr]
                dec = DecodedBase(
                    bitstream.parse_header(b, max_pixels=self.max_pixels, reference=ref_header),
                    y_hat[j : j + 1],
                    bitstream.frame_ref_of(b),
                    len(b),
                )
                out[i] = EncodedFrame(b, enhs[j], dec)
        return out  # type: ignore[return-value]

    def encode(
        self, image: np.ndarray, layers: str = "all", reference: DecodedBase | None = None
    ) -> EncodedFrame:
        return self.encode_batch([image], layers, [reference])[0]

    # ------------------------------------------------------------------ decode
    def parse_header(self, data: bytes, reference: Header | None = None) -> Header:
        """The checked header (a predicted layer's bound to ``reference`` when given)."""
        return bitstream.parse_header(data, max_pixels=self.max_pixels, reference=reference)

    def _check_header(self, header: Header, kind: LayerKind) -> None:
        """The header is of ``kind`` (``BASE``: intra or predicted) and was coded by the model this
        codec has for that layer."""
        bitstream.expect_kind(header, kind)
        if header.kind is LayerKind.BASE:
            model_id = self.base_model_id
        elif header.kind is LayerKind.PREDICTED:
            # A P-frame names no model: the temporal model is this codec's (a connection's Hello
            # names it), the base model its reference's, bound from the chain's intra frame.
            if self.temporal is None:
                raise UnknownModel("no temporal model loaded; a predicted frame needs one")
            if not header.bound:
                return
            model_id = self.base_model_id
        else:
            if self.enhancement is None:
                raise UnknownModel(
                    f"no enhancement model loaded; the bitstream needs model {header.model_id}"
                )
            model_id = self.enhancement_model_id
        if header.model_id != model_id:
            raise UnknownModel(
                f"bitstream was coded by model {header.model_id}; this codec has {kind.label} model {model_id}"
            )

    def latent_shape(self, header: Header) -> tuple[int, int, int]:
        """(M, h, w) of the layer's ŷ: the image padded to the base's multiple, 16x down-sampled."""
        ph, pw = self._padded(header.height), self._padded(header.width)
        cfg = self.config if header.kind.is_base else self.enh_ckpt.config  # type: ignore[union-attr]
        return (cfg.latent_channels, ph // 16, pw // 16)

    def check_base(self, data: bytes, reference: Header | None = None) -> Header:
        """Everything that can be checked before decoding (cheap; no large allocation). A predicted
        layer's header is bound to ``reference`` (the header of the layer it names) when given,
        otherwise it comes back unbound (its bytes checked, its size and model not known yet)."""
        header = self.parse_header(data, reference)
        self._check_header(header, LayerKind.BASE)
        return header

    @torch.no_grad()
    def decode_base_batch(
        self,
        items: Sequence[bytes | Bitstream],
        return_exceptions: bool = False,
        references: Sequence[DecodedBase | None] | None = None,
    ) -> list[Any]:
        """Decode base layers, given as bytes or as :class:`Bitstream` whose header was parsed by
        :meth:`check_base` (not parsed again); with ``return_exceptions`` a failing item yields its
        LayercastError.

        A predicted frame needs ``references[i]``: the decoded base of the frame it was predicted
        from; a missing or different one (its CRC is not the one the header names) raises
        :class:`ReferenceMismatch` before anything is decoded."""
        out: list[Any] = [None] * len(items)
        refs = list(references) if references is not None else [None] * len(items)
        if len(refs) != len(items):
            raise ValueError(f"{len(refs)} references for {len(items)} bitstreams")
        groups: dict[tuple, list[tuple[int, Bitstream]]] = defaultdict(list)
        for i, item in enumerate(items):
            try:
                if isinstance(item, Bitstream):
                    self._check_header(item.header, LayerKind.BASE)
                    parsed = item
                else:
                    parsed = Bitstream(self.check_base(item), bytes(item))
                predicted = parsed.header.kind is LayerKind.PREDICTED
                if predicted:
                    parsed = Bitstream(self._bind(parsed.header, refs[i]), parsed.data)
            except LayercastError as exc:
                if not return_exceptions:
                    raise
                out[i] = exc
                continue
            groups[(predicted, *self.latent_shape(parsed.header))].append((i, parsed))
        for (predicted, *shape), members in groups.items():
            payloads = [b.payload for _, b in members]
            if predicted:
                cond = torch.cat([refs[i].y_hat for i, _ in members])  # type: ignore[union-attr]
                res = self.temporal.latent_codec.decompress(payloads, tuple(shape[1:]), cond)  # type: ignore[union-attr]
            else:
                res = self.base.latent_codec.decompress(payloads, tuple(shape[1:]))
            for j, (i, b) in enumerate(members):
                try:
                    if not b.header.symbols_match(res["checksums"][j]):
                        raise DecodeMismatch(
                            "decoded symbols differ from the encoded ones (symbol CRC mismatch): "
                            "entropy parameters diverged between encoder and decoder, or the payload is forged"
                        )
                except LayercastError as exc:
                    if not return_exceptions:
                        raise
                    out[i] = exc
                    continue
                out[i] = DecodedBase(
                    b.header, res["y_hat"][j : j + 1], bitstream.frame_ref_of(b.data), len(b.data)
                )
        return out

    def _bind(self, header: Header, ref: DecodedBase | None) -> Header:
        """A predicted frame's header bound to the decoded base it names (ReferenceMismatch when
        ``ref`` is missing or another frame); one already bound must name ``ref``."""
        if ref is None:
            raise ReferenceMismatch(
                "a predicted frame needs the previous frame's base layer, and none is held: "
                "the sender must send an intra frame"
            )
        if ref.frame_ref != header.frame_ref:
            raise ReferenceMismatch(
                f"the predicted frame refers to base layer {header.frame_ref:08x}, "
                f"the decoder holds {ref.frame_ref:08x}: the sender must send an intra frame"
            )
        if header.bound:
            return header
        bound = header.bind(ref.header)
        self._check_header(bound, LayerKind.BASE)
        return bound

    def decode_base(self, data: bytes, reference: DecodedBase | None = None) -> DecodedBase:
        return self.decode_base_batch([data], references=[reference])[0]

    @torch.no_grad()
    def preview(self, dec: DecodedBase) -> np.ndarray:
        x = self._g_simple(dec.y_hat.float()).clamp(0, 1)
        return self._to_uint8(x[0], *dec.size)

    @torch.no_grad()
    def task_images(self, decs: Sequence[DecodedBase]) -> list[torch.Tensor]:
        """x̃ = g_s_task(Ŷ_b), cropped to each frame's size (what the task model sees)."""
        out: list[torch.Tensor] = []
        for dec in decs:
            h, w = dec.size
            out.append(self._g_s_task(dec.y_hat.float())[0, :, :h, :w])
        return out

    @torch.no_grad()
    def infer(self, decs: Sequence[DecodedBase]) -> list[Any]:
        """Run the task model on decoded base layers, batching frames of equal size."""
        if self.task_model is None:
            raise UnknownModel(f"base model {self.base_model_id} has no task model")
        results: list[Any] = [None] * len(decs)
        by_shape: dict[tuple, list[int]] = defaultdict(list)
        for i, d in enumerate(decs):
            by_shape[d.size].append(i)
        for _, idx in by_shape.items():
            y = torch.cat([decs[i].y_hat.float() for i in idx])
            h, w = decs[idx[0]].size
            x = self._g_s_task(y)[:, :, :h, :w]
            raw = self._task_model(x)
            for i, r in zip(idx, self.task_model.postprocess(raw, [(h, w)] * len(idx)), strict=True):
                results[i] = r
        return results

    @torch.no_grad()
    def decode_enhancement(self, dec: DecodedBase, data: bytes) -> torch.Tensor:
        """The enhancement target (reconstruction in [0, 1] or segmentation logits), cropped."""
        header = self.parse_header(data)
        self._check_header(header, LayerKind.ENHANCEMENT)
        if header.frame_ref != dec.frame_ref or (header.width, header.height) != (
            dec.header.width,
            dec.header.height,
        ):
            raise FrameMismatch(
                "the enhancement bitstream belongs to a different frame than this base bitstream"
            )
        e = self.enhancement
        assert e is not None
        cond = e.condition(dec.y_hat)
        res = e.latent_codec.decompress([bitstream.payload(data)], self.latent_shape(header)[1:], cond)
        if not header.symbols_match(res["checksums"][0]):
            raise DecodeMismatch(
                "decoded enhancement symbols differ from the encoded ones (symbol CRC mismatch)"
            )
        # EnhancementLayer.synthesize, through the placed g_s
        out = self._g_s_e(torch.cat([res["y_hat"].float(), cond.float()], dim=1))
        return out[0, :, : header.height, : header.width]

    def reconstruct(self, dec: DecodedBase, data: bytes) -> np.ndarray:
        if self.enhancement is None or self.enhancement.target != "reconstruction":
            raise UnknownModel("this codec has no reconstruction enhancement model")
        x = self.decode_enhancement(dec, data)
        return self._to_uint8(x, *dec.size)

    @property
    def model_ids(self) -> dict[str, str | None]:
        return {
            "base": self.base_model_id,
            "enhancement": self.enhancement_model_id,
            "temporal": self.temporal_model_id,
        }


def load_codec(
    name: str = "default",
    *,
    enhancement: str | None = "auto",
    temporal: str | None = "auto",
    device: str | torch.device | None = "auto",
    registry: Registry | None = None,
    **kwargs: Any,
) -> ScalableCodec:
    """Build a codec from the registry: a base model and (``"auto"``) the enhancement and the
    temporal (P-frame) model trained on it; ``None`` leaves one out."""
    reg = registry or default_registry()
    base = reg.load(name)
    enh = tmp = None
    if enhancement == "auto":
        entry = reg.enhancement_for(base.model_id)
        enh = reg.load(entry.name) if entry else None
    elif enhancement:
        enh = reg.load(enhancement)
    if temporal == "auto":
        entry = reg.temporal_for(base.model_id)
        tmp = reg.load(entry.name) if entry else None
    elif temporal:
        tmp = reg.load(temporal)
    return ScalableCodec(base, enh, tmp, device=device, **kwargs)
