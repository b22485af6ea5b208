"""Repository-wide rules: generated code is fresh, lint is clean, edge and cloud stay apart."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_grpc_code_is_not_stale():
    proc = subprocess.run(
        [sys.executable, "scripts/gen_proto.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_lint_and_format():
    ruff = [sys.executable, "-m", "ruff"]
    check = subprocess.run([*ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout[-3000:]
    fmt = subprocess.run([*ruff, "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout[-3000:]


def _imports(folder: str) -> set[str]:
    found = set()
    for path in (ROOT / folder).rglob("*.py"):
        for m in re.finditer(r"^\s*(?:from|import)\s+(layercast\.\w+)", path.read_text(), flags=re.M):
            found.add(m.group(1))
    return found


def test_edge_and_cloud_depend_on_shared_never_on_each_other():
    assert "layercast.cloud" not in _imports("edge")
    assert "layercast.edge" not in _imports("cloud")
    shared = _imports("shared")
    assert not shared & {"layercast.edge", "layercast.cloud", "layercast.train", "layercast.commands"}
