"""`layercast train temporal`: the P-frame entropy model of a base layer, on fixed-camera clips.

The base layer stays frozen (its analysis transform, task synthesis and task model): only the rate
of its latent changes. Training clips come from the synthetic fixed street cameras
(:class:`~layercast.shared.data.synth.SyntheticCamera`, seeds disjoint from the evaluation
clips'), at several sizes; every frame's ``y = g_a(x)`` is computed once. A step samples
``batch`` windows of ``unroll`` consecutive frames, codes the first as an intra frame (the base's
own entropy model, in eval mode) and each later one as a P-frame against the previous frame's
ŷ as the P model itself produced it (closed loop, as at coding time), and minimises the bits per
pixel of those P-frames (ẑ and ŷ), optionally plus ``distortion`` × the squared error of ŷ_t
against y_t at the coded positions (per pixel; inside the dead zone ŷ is the mean, so this pulls the
means towards y_t where the rate alone leaves them), plus CompressAI's auxiliary loss of the
hyperprior's quantiles.

Resumable: ``state.pt`` every ``save_every`` steps; ``metrics.csv`` logs the rate.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from layercast.shared.codec.api import ScalableCodec, load_codec
from layercast.shared.codec.entropy import load_weights
from layercast.shared.codec.factory import temporal_checkpoint
from layercast.shared.codec.registry import default_registry
from layercast.shared.codec.skip import DEFAULT_SKIP_THRESHOLD
from layercast.shared.codec.temporal import DEFAULT_DEADZONE, TemporalLayer
from layercast.shared.data.synth import SyntheticCamera
from layercast.train.state import MetricsLog, load_state, save_state, write_json

#: Training cameras are seeded from here up; evaluation clips use small seeds.
TRAIN_SEED0 = 100_000


@dataclass
class TemporalTrainConfig:
    base: str
    out: Path
    cameras: int = 64
    frames: int = 12
    sizes: tuple[tuple[int, int], ...] = ((256, 192), (512, 288))
    fps: float = 10.0
    steps: int = 3000
    batch: int = 8
    unroll: int = 4
    lr: float = 5e-4
    deadzone: float = DEFAULT_DEADZONE
    skip_threshold: float = DEFAULT_SKIP_THRESHOLD
    #: Weight of the latent distortion: squared error of ŷ_t against y_t at the coded (moving) positions,
    #: summed and divided by the pixels like the bits; 0 trains on the rate alone.
    distortion: float = 0.0
    #: A temporal checkpoint (registry name or path) of the same base to start from, else the intra model.
    init: str | None = None
    lr_aux: float = 1e-3
    seed: int = 0
    save_every: int = 250
    threads: int = 0  # 0: torch's default
    extra: dict = field(default_factory=dict)


@torch.no_grad()
def clip_latents(codec: ScalableCodec, cfg: TemporalTrainConfig) -> list[torch.Tensor]:
    """``y = g_a(x)`` of every training frame: one (frames, M, h, w) float32 tensor per camera and size."""
    out = []
    jobs = [(size, cam) for size in cfg.sizes for cam in range(cfg.cameras)]
    for (w, h), cam in tqdm(jobs, desc="training clips (render + g_a)"):
        camera = SyntheticCamera(TRAIN_SEED0 + cam, w, h, cfg.fps)
        frames = [camera.frame(i).image for i in range(cfg.frames)]
        x = codec._pad(torch.stack([codec._to_tensor(f) for f in frames]).to(codec.device))
        out.append(codec.base.g_a(x).float().cpu())
    return out


@torch.no_grad()
def intra_y_hat(codec: ScalableCodec, y: torch.Tensor) -> torch.Tensor:
    """ŷ of intra frames as the base's entropy model quantises them (round(y − μ) + μ)."""
    lc = codec.base.latent_codec
    return lc(y.to(device=codec.device, dtype=next(lc.parameters()).dtype))["y_hat"].float()


def _bits(likelihoods: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(-torch.log2(v).sum() for v in likelihoods.values())


def _coded_error(out: dict, y: torch.Tensor) -> torch.Tensor:
    """Σ (ŷ_t − y_t)² over the coded positions (static ones copy ŷ_{t-1}: no gradient there)."""
    err = (out["y_hat"] - y).pow(2)
    moving = out.get("moving")
    return (err if moving is None else err * moving).sum()


def _optimizer(cfg: TemporalTrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return torch.optim.Adam(
        [
            {"params": [p for n, p in named if not n.endswith("quantiles")], "lr": cfg.lr},
            {"params": [p for n, p in named if n.endswith("quantiles")], "lr": cfg.lr_aux},
        ]
    )


def train_temporal(cfg: TemporalTrainConfig) -> Path:
    """Train (or resume) and export ``out/temporal.pt``; returns its path."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    cfg.out.mkdir(parents=True, exist_ok=True)
    codec = load_codec(cfg.base, enhancement=None, temporal=None, device="cpu")
    model = _initial(codec, cfg.init)
    model.deadzone = cfg.deadzone
    model.skip_threshold = cfg.skip_threshold
    opt = _optimizer(cfg, model)
    state_path = cfg.out / "state.pt"
    step = 0
    if state_path.exists():
        step, _ = load_state(state_path, {"model": model}, {"opt": opt})
        if step >= cfg.steps and (cfg.out / "temporal.pt").exists():
            return cfg.out / "temporal.pt"  # nothing left to train: already exported
    latents = clip_latents(codec, cfg)
    intra = [intra_y_hat(codec, lat) for lat in tqdm(latents, desc="intra ŷ of the training clips")]
    pixels = [lat.shape[2] * lat.shape[3] * 256 for lat in latents]  # padded image pixels per frame
    log = MetricsLog(cfg.out / "metrics.csv")
    model.train()
    t0, bar = time.time(), tqdm(total=cfg.steps, initial=step, desc="temporal model")
    while step < cfg.steps:
        # one size per step (a batch needs one shape): cameras of that size, random windows, random flips
        size = rng.randrange(len(cfg.sizes))
        cams = [size * cfg.cameras + rng.randrange(cfg.cameras) for _ in range(cfg.batch)]
        starts = [rng.randrange(cfg.frames - cfg.unroll + 1) for _ in cams]
        window = torch.stack([latents[c][s : s + cfg.unroll] for c, s in zip(cams, starts, strict=True)])
        ref = torch.stack([intra[c][s] for c, s in zip(cams, starts, strict=True)])
        if rng.random() < 0.5:
            window, ref = window.flip(-1), ref.flip(-1)
        bits, sq = torch.zeros(()), torch.zeros(())
        for t in range(1, cfg.unroll):
            out = model(window[:, t], ref)
            bits = bits + _bits(out["likelihoods"])
            if cfg.distortion:
                sq = sq + _coded_error(out, window[:, t])
            ref = out["y_hat"].detach()
        per_pixel = cfg.batch * (cfg.unroll - 1) * pixels[cams[0]]
        bpp, dpp = bits / per_pixel, sq / per_pixel
        aux = model.latent_codec.z_entropy.loss()
        opt.zero_grad(set_to_none=True)
        (bpp + cfg.distortion * dpp + aux).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(bpp=f"{bpp.item():.4f}", dpp=f"{dpp.item():.4f}")
        if step % 25 == 0:
            log.write(
                {
                    "step": step,
                    "bpp": bpp.item(),
                    "dpp": dpp.item(),
                    "aux": aux.item(),
                    "seconds": time.time() - t0,
                }
            )
        if step % cfg.save_every == 0 or step == cfg.steps:
            save_state(state_path, step, {"model": model}, {"opt": opt}, {"config": _recipe(cfg)})
    bar.close()
    return export(codec, model, cfg)


def _initial(codec: ScalableCodec, init: str | None) -> TemporalLayer:
    """The P model training starts from: ``init``'s weights, or the intra model's (``from_intra``)."""
    if not init:
        return TemporalLayer.from_intra(codec.base.latent_codec, codec.config)
    ckpt = default_registry().load(init)
    if (ckpt.temporal or {}).get("base_model_id") != codec.base_model_id:
        raise ValueError(f"{init} is not a temporal model of base {codec.base_model_id}")
    model = TemporalLayer(ckpt.config)
    load_weights(model, ckpt.state_dict)
    return model.float()


def _recipe(cfg: TemporalTrainConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}


def fit_quantiles(model: torch.nn.Module, steps: int = 2000, lr: float = 0.05, tol: float = 0.05) -> float:
    """Fit every factorised prior's quantiles to its density (CompressAI's auxiliary loss), data-free.

    The CDF tables cover the range between those quantiles; a prior whose density moved faster than
    its quantiles followed would code the symbols outside them with the rANS coder's costly escape.
    Returns the auxiliary loss at the end (near 0 once fitted)."""
    from compressai.entropy_models import EntropyBottleneck

    total = 0.0
    for eb in (m for m in model.modules() if isinstance(m, EntropyBottleneck)):
        opt = torch.optim.Adam([eb.quantiles], lr=lr)
        for _ in range(steps):
            loss = eb.loss()
            if loss.item() < tol:
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        total += float(eb.loss().detach())
    return total


def export(codec: ScalableCodec, model: TemporalLayer, cfg: TemporalTrainConfig) -> Path:
    """The trained P model as a compact ``temporal`` checkpoint bound to its base's model id."""
    model.eval()
    fit_quantiles(model)
    ckpt = temporal_checkpoint(
        model, codec.base_model_id, training=_recipe(cfg), intra=codec.base.latent_codec
    )
    ckpt.to_half()
    path = cfg.out / "temporal.pt"
    model_id = ckpt.save(path, compact=True)
    write_json(cfg.out / "summary.json", {"model_id": model_id, "base_model_id": codec.base_model_id})
    return path


def estimate_rate(
    codec: ScalableCodec, latents: list[torch.Tensor], model: TemporalLayer
) -> dict[str, float]:
    """Mean estimated bits of intra vs P coding over consecutive training frames (a quick check)."""
    intra, pred, n = 0.0, 0.0, 0
    model.eval()
    with torch.no_grad():
        for lat in latents:
            lc = codec.base.latent_codec
            out_i = lc(lat.to(next(lc.parameters()).dtype))
            ref = out_i["y_hat"][:-1].float()
            out_p = model(lat[1:], ref)
            intra += float(_bits(out_i["likelihoods"])) * (len(lat) - 1) / len(lat)
            pred += float(_bits(out_p["likelihoods"]))
            n += len(lat) - 1
    return {
        "intra_bytes_per_frame": intra / n / 8,
        "p_bytes_per_frame": pred / n / 8,
        "ratio": pred / max(intra, 1e-9),
    }
