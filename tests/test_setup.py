"""The set-up: scripts/bootstrap.sh installs every Debian package the tests need, and a test
whose system program is missing fails saying which package and which command bring it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.system import GST_RTSP_PACKAGES, require

ROOT = Path(__file__).resolve().parents[1]


def test_missing_program_fails_naming_package_and_bootstrap() -> None:
    with pytest.raises(pytest.fail.Exception) as info:
        require("layercast-no-such-program", "layercast-no-such-package", "this check")
    msg = str(info.value)
    assert "layercast-no-such-program is not installed" in msg
    assert "apt-get install layercast-no-such-package" in msg and "bash scripts/bootstrap.sh" in msg


def test_bootstrap_installs_every_package_the_tests_name() -> None:
    listed = {
        line.strip()
        for line in (ROOT / "deploy/apt-packages.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    named: set[str] = set()
    for path in (ROOT / "tests").rglob("*.py"):
        for m in re.finditer(r'require\([^,]+,\s*"([^"]+)"', path.read_text()):
            named.update(m.group(1).split())
    named.discard("layercast-no-such-package")
    named |= set(GST_RTSP_PACKAGES.split())
    assert named and named <= listed, named - listed
    bootstrap = (ROOT / "scripts/bootstrap.sh").read_text()
    assert "deploy/apt-packages.txt" in bootstrap and "dpkg-query" in bootstrap
    ci = (ROOT / ".ci/run").read_text()
    assert "bash scripts/bootstrap.sh && .venv/bin/python -m pytest\n" in ci
    assert "bash scripts/bootstrap.sh && .venv/bin/python -m pytest\n" in (ROOT / "README.md").read_text()
