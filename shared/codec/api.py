"""The codec facade used by the edge, the cloud and the command line.

    codec = load_codec("default")                       # base (+ its enhancement) from the registry
    frames = codec.encode_batch([img])                  # EncodedFrame(base=bytes, enhancement=bytes | None)
    [dec] = codec.decode_base_batch([frames[0].base])   # needs only the base bytes
    codec.preview(dec)                                  # uint8 HxWx3 from the base alone
    codec.infer([dec])                                  # TaskResult per frame
    codec.reconstruct(dec, frames[0].enhancement)       # uint8 HxWx3, needs Ŷ_b

Numerics: the analysis/synthesis transforms run in float32 on the selected
device; the entropy model runs in ``coding_dtype`` (float64 by default) with
means snapped to a dyadic grid, so a bitstream decodes to the same symbols on
another machine, thread count or batch composition. The symbol CRC in every
header turns the remaining (vanishingly rare) divergence into DecodeMismatch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from layercast.shared.codec import bitstream
from layercast.shared.codec.base_layer import BaseLayer
from layercast.shared.codec.bitstream import Bitstream, Header, LayerKind
from layercast.shared.codec.checkpoint import Checkpoint
from layercast.shared.codec.enhancement import EnhancementLayer
from layercast.shared.codec.entropy import load_weights
from layercast.shared.codec.registry import Registry, default_registry
from layercast.shared.device import select_device
from layercast.shared.errors import (
    DecodeMismatch,
    FrameMismatch,
    ImageTooLarge,
    InvalidImage,
    LayercastError,
    UnknownModel,
)


@dataclass(frozen=True)
class EncodedFrame:
    base: bytes
    enhancement: bytes | None


@dataclass
class DecodedBase:
    header: Header
    y_hat: torch.Tensor  # (1, M, h, w) in the coding dtype, on the codec's device
    frame_ref: int  # CRC32 of the base bitstream, what its enhancement refers to
    nbytes: int

    @property
    def size(self) -> tuple[int, int]:
        return self.header.height, self.header.width


class ScalableCodec:
    """A trained base layer (with its task model) and optionally an enhancement layer."""

    def __init__(
        self,
        base: Checkpoint,
        enhancement: Checkpoint | None = None,
        *,
        device: str | torch.device | None = "auto",
        coding_dtype: torch.dtype = torch.float64,
        max_pixels: int = bitstream.DEFAULT_MAX_PIXELS,
    ) -> None:
        if base.kind != "base":
            article = "an" if base.kind[:1] in "aeiou" else "a"
            raise UnknownModel(f"{base.name} is {article} {base.kind} checkpoint, not a base model")
        self.device = select_device(device)
        self.coding_dtype = coding_dtype
        self.max_pixels = max_pixels
        self.base_ckpt = base
        self.config = base.config
        self.base_model_id = base.model_id
        self.base = BaseLayer(base.config)
        load_weights(self.base, base.state_dict)
        self.base.eval().to(self.device)
        self.base.latent_codec.to(coding_dtype)
        task = base.task or {}
        self.task = task.get("kind", "none")
        self.class_names: list[str] = list(task.get("class_names") or [])
        self.task_model = self._build_task_model(task)

        self.enh_ckpt = enhancement
        self.enhancement: EnhancementLayer | None = None
        self.enhancement_model_id: str | None = None
        if enhancement is not None:
            info = enhancement.enhancement or {}
            if info.get("base_model_id") != self.base_model_id:
                raise UnknownModel(
                    f"enhancement model {enhancement.model_id} was trained on base {info.get('base_model_id')}, "
                    f"not on {self.base_model_id}"
                )
            self.enhancement = EnhancementLayer(
                enhancement.config,
                self.config.latent_channels,
                target=info.get("target", "reconstruction"),
                standalone=bool(info.get("standalone", False)),
            )
            load_weights(self.enhancement, enhancement.state_dict)
            self.enhancement.eval().to(self.device)
            self.enhancement.latent_codec.to(coding_dtype)
            self.enhancement_model_id = enhancement.model_id

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
    def encode_batch(self, images: Sequence[np.ndarray], layers: str = "all") -> list[EncodedFrame]:
        """Encode images (any sizes; same-size images share a batch)."""
        tensors = [self._to_tensor(im) for im in images]
        out: list[EncodedFrame | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, t in enumerate(tensors):
            by_size[tuple(t.shape[-2:])].append(i)
        for (h, w), idx in by_size.items():
            x = self._pad(torch.stack([tensors[i] for i in idx]).to(self.device))
            enc = self.base.latent_codec.compress(self.base.g_a(x))
            y_hat = enc["y_hat"]
            bases = [
                bitstream.pack_layer(LayerKind.BASE, self.base_model_id, w, h, s, c)
                for s, c in zip(enc["strings"], enc["checksums"], strict=True)
            ]
            enhs: list[bytes | None] = [None] * len(idx)
            if self.enhancement is not None and layers == "all":
                e = self.enhancement
                enc_e = e.latent_codec.compress(e.g_a(x), e.condition(y_hat))
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
                out[i] = EncodedFrame(bases[j], enhs[j])
        return out  # type: ignore[return-value]

    def encode(self, image: np.ndarray, layers: str = "all") -> EncodedFrame:
        return self.encode_batch([image], layers)[0]

    # ------------------------------------------------------------------ decode
    def parse_header(self, data: bytes) -> Header:
        return bitstream.parse_header(data, max_pixels=self.max_pixels)

    def _check_header(self, header: Header, kind: LayerKind) -> None:
        """The header is of ``kind`` and was coded by the model this codec has for that layer."""
        bitstream.expect_kind(header, kind)
        if kind is LayerKind.BASE:
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
        cfg = self.config if header.kind is LayerKind.BASE else self.enh_ckpt.config  # type: ignore[union-attr]
        return (cfg.latent_channels, ph // 16, pw // 16)

    def check_base(self, data: bytes) -> Header:
        """Everything that can be checked before decoding (cheap; no large allocation)."""
        header = self.parse_header(data)
        self._check_header(header, LayerKind.BASE)
        return header

    @torch.no_grad()
    def decode_base_batch(
        self, items: Sequence[bytes | Bitstream], return_exceptions: bool = False
    ) -> list[Any]:
        """Decode base layers, given as bytes or as :class:`Bitstream` whose header was parsed by
        :meth:`check_base` (not parsed again); with ``return_exceptions`` a failing item yields its
        LayercastError."""
        out: list[Any] = [None] * len(items)
        groups: dict[tuple, list[tuple[int, Bitstream]]] = defaultdict(list)
        for i, item in enumerate(items):
            try:
                if isinstance(item, Bitstream):
                    self._check_header(item.header, LayerKind.BASE)
                    parsed = item
                else:
                    parsed = Bitstream(self.check_base(item), bytes(item))
            except LayercastError as exc:
                if not return_exceptions:
                    raise
                out[i] = exc
                continue
            groups[self.latent_shape(parsed.header)].append((i, parsed))
        for shape, members in groups.items():
            res = self.base.latent_codec.decompress([b.payload for _, b in members], shape[1:])
            for j, (i, b) in enumerate(members):
                try:
                    if res["checksums"][j] != b.header.symbols_crc:
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

    def decode_base(self, data: bytes) -> DecodedBase:
        return self.decode_base_batch([data])[0]

    @torch.no_grad()
    def preview(self, dec: DecodedBase) -> np.ndarray:
        x = self.base.preview(dec.y_hat.float())
        return self._to_uint8(x[0], *dec.size)

    @torch.no_grad()
    def task_images(self, decs: Sequence[DecodedBase]) -> list[torch.Tensor]:
        """x̃ = g_s_task(Ŷ_b), cropped to each frame's size (what the task model sees)."""
        out: list[torch.Tensor] = []
        for dec in decs:
            h, w = dec.size
            out.append(self.base.task_image(dec.y_hat.float())[0, :, :h, :w])
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
            x = self.base.task_image(y)[:, :, :h, :w]
            raw = self.task_model(x)
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
        if res["checksums"][0] != header.symbols_crc:
            raise DecodeMismatch(
                "decoded enhancement symbols differ from the encoded ones (symbol CRC mismatch)"
            )
        out = e.synthesize(res["y_hat"].float(), cond.float())
        return out[0, :, : header.height, : header.width]

    def reconstruct(self, dec: DecodedBase, data: bytes) -> np.ndarray:
        if self.enhancement is None or self.enhancement.target != "reconstruction":
            raise UnknownModel("this codec has no reconstruction enhancement model")
        x = self.decode_enhancement(dec, data)
        return self._to_uint8(x, *dec.size)

    @property
    def model_ids(self) -> dict[str, str | None]:
        return {"base": self.base_model_id, "enhancement": self.enhancement_model_id}


def load_codec(
    name: str = "default",
    *,
    enhancement: str | None = "auto",
    device: str | torch.device | None = "auto",
    registry: Registry | None = None,
    **kwargs: Any,
) -> ScalableCodec:
    """Build a codec from the registry: a base model and (``"auto"``) the enhancement trained on it."""
    reg = registry or default_registry()
    base = reg.load(name)
    enh = None
    if enhancement == "auto":
        entry = reg.enhancement_for(base.model_id)
        enh = reg.load(entry.name) if entry else None
    elif enhancement:
        enh = reg.load(enhancement)
    return ScalableCodec(base, enh, device=device, **kwargs)
