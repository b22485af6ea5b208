"""Where the compiled coder's numba cache goes when the package folder is read-only (a wheel in a
system site-packages): numba's user-wide folder, else a private temporary one; either way a second
process loads the kernels instead of compiling them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CODEC_DIR = Path(__file__).resolve().parents[3] / "shared" / "codec"

#: One small kernel: compiling it is quick, and its statistics say whether it came from the cache.
#: ans.py loads from its file alone (numba's cache follows the file), without the codec's torch.
PROBE = """
import importlib.util, json, sys, numpy as np
spec = importlib.util.spec_from_file_location("ans", sys.argv[1])
ans = sys.modules["ans"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ans)
ans.decode_uniform(np.array([5, 1], np.uint32), np.array([1]), np.array([7 << 32 | 5], np.uint64), 10)
s = ans.decode_uniform.stats
print(json.dumps({"path": s.cache_path, "hits": sum(s.cache_hits.values()), "misses": sum(s.cache_misses.values())}))
"""


def _read_only_package(env: dict[str, str]) -> dict:
    """Run PROBE in a mount namespace where the codec package folder is mounted read-only."""
    cmd = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount --bind -o ro "$1" "$1" && exec "$2" -c "$3" "$1/ans.py"',
        "sh",
        str(CODEC_DIR),
        sys.executable,
        PROBE,
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind -o ro {tmp_path} {tmp_path}"], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip("needs a mount namespace (unshare -m, as root) to mount the package read-only")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "XDG_"))}
    env["TMPDIR"] = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    return env


@pytest.mark.slow  # numba's own locator; the fallback below is this package's
def test_read_only_package_caches_in_the_user_cache_folder(env, tmp_path):
    env["XDG_CACHE_HOME"] = str(tmp_path / "user-cache")
    first, second = _read_only_package(env), _read_only_package(env)
    assert first["path"].startswith(str(tmp_path / "user-cache" / "numba"))
    assert (first["misses"], first["hits"]) == (1, 0)
    assert (second["misses"], second["hits"]) == (0, 1) and second["path"] == first["path"]


def test_read_only_package_and_no_user_cache_caches_in_a_private_temporary_folder(env, tmp_path):
    env["XDG_CACHE_HOME"] = str(CODEC_DIR / "no-cache-here")  # inside the read-only mount
    first, second = _read_only_package(env)["path"], _read_only_package(env)
    private = tmp_path / "tmp" / f"layercast-numba-{os.getuid()}"
    assert first.startswith(str(private)) and second["path"] == first
    assert (second["misses"], second["hits"]) == (0, 1)
    assert private.stat().st_mode & 0o777 == 0o700
