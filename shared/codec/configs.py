"""Named codec configurations.

One table (``CONFIGS``) is the single source of truth for architectures; a
checkpoint stores its ``CodecConfig`` as a plain dict, so a renamed or edited
entry here never changes what an existing checkpoint builds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from layercast.shared.errors import UnknownModel


@dataclass(frozen=True)
class CodecConfig:
    """Widths of the ELIC-style transforms and the entropy model.

    ``widths`` are the three inner stages of g_a (3 → w0 → w1 → w2 → M).
    """

    name: str
    widths: tuple[int, int, int]
    latent_channels: int
    groups: tuple[int, ...]
    hyper_channels: int
    res_depth: int = 1
    simple_hidden: int = 96
    description: str = ""
    #: total down-sampling of the codec (g_a /16, h_a /4): images are padded to a multiple of this
    pad_multiple: int = field(default=64)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CodecConfig:
        data = dict(data)
        data["widths"] = tuple(data["widths"])
        data["groups"] = tuple(data["groups"])
        return cls(**data)


CONFIGS: dict[str, CodecConfig] = {}


def register(config: CodecConfig) -> CodecConfig:
    if config.name in CONFIGS:
        raise ValueError(f"codec configuration {config.name!r} is already registered")
    if sum(config.groups) != config.latent_channels:
        raise ValueError(f"{config.name}: groups must add up to M = {config.latent_channels}")
    CONFIGS[config.name] = config
    return config


register(
    CodecConfig(
        name="paper",
        widths=(24, 48, 192),
        latent_channels=192,
        groups=(16, 16, 32, 64, 64),
        hyper_channels=128,
        res_depth=3,
        simple_hidden=192,
        description="the paper's widths (3→24→48→192→M, M = 192), ELIC's five uneven groups",
    )
)
register(
    CodecConfig(
        name="small",
        widths=(24, 48, 96),
        latent_channels=96,
        groups=(8, 8, 16, 32, 32),
        hyper_channels=48,
        res_depth=1,
        simple_hidden=96,
        description="CPU configuration for edge boxes without a GPU",
    )
)
register(
    CodecConfig(
        name="tiny",
        widths=(16, 32, 64),
        latent_channels=64,
        groups=(16, 48),
        hyper_channels=32,
        res_depth=1,
        simple_hidden=64,
        description="smallest CPU configuration; the shipped models and tests use it",
    )
)
register(
    CodecConfig(
        name="micro",
        widths=(8, 16, 32),
        latent_channels=32,
        groups=(8, 24),
        hyper_channels=16,
        res_depth=1,
        simple_hidden=32,
        description="load benchmarks: half of tiny's widths; no trained weights are shipped",
    )
)


def get_config(name: str) -> CodecConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise UnknownModel(
            f"no codec configuration named {name!r}; known: {', '.join(sorted(CONFIGS))}"
        ) from None


def list_configs() -> list[str]:
    return sorted(CONFIGS)
