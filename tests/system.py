"""System programs the tests use, and what to do when one is missing.

``bash scripts/bootstrap.sh`` installs them on Debian (the list: ``deploy/apt-packages.txt``).
A test that needs one calls :func:`require`, which fails, naming the program, its Debian package
and that command, when the program is absent: a missing program is a broken set-up, never a
silent skip.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

#: Debian's own Python, which has GStreamer's introspection bindings (python3-gi).
SYSTEM_PYTHON = "/usr/bin/python3"
#: Debian packages of the RTSP test camera (GStreamer's RTSP server under Debian's Python).
GST_RTSP_PACKAGES = "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"


def missing(program: str, package: str, why: str) -> str:
    return (
        f"{program} is not installed: {why} needs it. On Debian, `bash scripts/bootstrap.sh` installs it "
        f"(apt-get install {package}); elsewhere install {program} from your system's packages."
    )


def require(program: str, package: str, why: str) -> str:
    """The path of ``program`` (an absolute path or a name on PATH); fails the test when absent."""
    found = program if Path(program).is_absolute() and Path(program).is_file() else shutil.which(program)
    if not found:
        pytest.fail(missing(program, package, why), pytrace=False)
    return found


@cache
def _gst_rtsp_problem() -> str:
    if not Path(SYSTEM_PYTHON).is_file():
        return f"{SYSTEM_PYTHON} is absent"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
        "from gi.repository import Gst; Gst.init(None);"
        "missing = [e for e in ('matroskademux', 'h264parse', 'rtph264pay') if not Gst.ElementFactory.find(e)];"
        "print(' '.join(missing))"
    )
    proc = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60)
    if proc.returncode:
        return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "the probe failed"
    return f"GStreamer elements missing: {proc.stdout.strip()}" if proc.stdout.strip() else ""


def require_gst_rtsp_server(why: str) -> str:
    """Debian's Python with GStreamer's RTSP server (for the test camera); fails the test when absent."""
    problem = _gst_rtsp_problem()
    if problem:
        pytest.fail(
            missing(
                "GStreamer's RTSP server",
                GST_RTSP_PACKAGES,
                why,
            )
            + f" ({problem})",
            pytrace=False,
        )
    return SYSTEM_PYTHON
