"""The model registry: every checkpoint we can load, by name or by model id.

Search path: the checkpoints shipped in ``layercast.shared.zoo``, then the
folders in ``$LAYERCAST_MODELS`` (``:``-separated), then folders passed in.
A name is a checkpoint's file stem; ``zoo/aliases.json`` maps aliases such as
``default`` to names. Every entry is indexed by its model id too, which is
what a bitstream carries.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from layercast.shared.codec.checkpoint import Checkpoint, load_checkpoint
from layercast.shared.errors import UnknownModel

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path
    kind: str
    model_id: str
    base_model_id: str | None
    target: str | None
    standalone: bool
    task: str | None


class Registry:
    def __init__(self, dirs: Iterable[str | Path] = ()) -> None:
        env = [p for p in os.environ.get("LAYERCAST_MODELS", "").split(":") if p]
        self.dirs = [ZOO_DIR, *map(Path, env), *map(Path, dirs)]
        self._entries: dict[str, Entry] = {}
        self._by_id: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}
        for d in self.dirs:
            alias_file = d / "aliases.json"
            if alias_file.exists():
                self._aliases.update(json.loads(alias_file.read_text()))
            for path in sorted(d.glob("*.pt")):
                self.add(path)

    def add(self, path: str | Path) -> Entry:
        ckpt = load_checkpoint(path)
        enh = ckpt.enhancement or ckpt.temporal or {}
        entry = Entry(
            name=Path(path).stem,
            path=Path(path),
            kind=ckpt.kind,
            model_id=ckpt.model_id,
            base_model_id=enh.get("base_model_id"),
            target=enh.get("target"),
            standalone=bool(enh.get("standalone", False)),
            task=(ckpt.task or {}).get("kind"),
        )
        self._entries[entry.name] = entry
        self._by_id[entry.model_id] = entry
        return entry

    def entries(self) -> list[Entry]:
        return sorted(self._entries.values(), key=lambda e: e.name)

    def resolve(self, name_or_id: str) -> Entry:
        """An entry by alias, name, model id, or path to a checkpoint file."""
        key = self._aliases.get(name_or_id, name_or_id)
        if key in self._entries:
            return self._entries[key]
        if key in self._by_id:
            return self._by_id[key]
        if key.endswith(".pt") and Path(key).exists():
            return self.add(key)
        known = ", ".join(sorted([*self._aliases, *self._entries])) or "none"
        raise UnknownModel(f"no model named or with id {name_or_id!r} in the registry (known: {known})")

    def load(self, name_or_id: str) -> Checkpoint:
        return load_checkpoint(self.resolve(name_or_id).path)

    def enhancement_for(self, base_model_id: str, target: str = "reconstruction") -> Entry | None:
        """The conditional (not standalone) enhancement model trained on top of a base model."""
        for e in self.entries():
            if (
                e.kind == "enhancement"
                and e.base_model_id == base_model_id
                and e.target == target
                and not e.standalone
            ):
                return e
        return None

    def temporal_for(self, base_model_id: str) -> Entry | None:
        """The P-frame (temporal) model trained for a base model."""
        for e in self.entries():
            if e.kind == "temporal" and e.base_model_id == base_model_id:
                return e
        return None


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    return Registry()
