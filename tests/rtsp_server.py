"""A tiny RTSP camera for tests: GStreamer's RTSP server serving an H.264 clip as a live camera.

Runs under Debian's ``/usr/bin/python3`` (``python3-gi``, ``gir1.2-gst-rtsp-server-1.0``,
``gstreamer1.0-plugins-bad`` for ``h264parse``, all installed by ``bash scripts/bootstrap.sh``), not
the project's virtual environment:

    /usr/bin/python3 tests/rtsp_server.py CLIP.mkv PORT [PATH]

``CLIP.mkv`` is H.264 in Matroska (``ffmpeg ... -c:v libx264 clip.mkv``, see
:func:`tests.rtsp_camera.make_clip`), played in real time from its timestamps. The camera listens on 127.0.0.1:PORT and serves ``rtsp://127.0.0.1:PORT/PATH`` (default ``cam``);
it prints ``READY`` once listening and runs until killed.
"""

from __future__ import annotations

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main(argv: list[str]) -> int:
    clip, port = argv[0], argv[1]
    path = argv[2] if len(argv) > 2 else "cam"
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    # The container carries each frame's timestamp, so the server sends in real time; the media is
    # shared so every client sees the same live camera.
    factory.set_launch(
        f'( filesrc location="{clip}" ! matroskademux ! h264parse '
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory(f"/{path}", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        return 1
    print("READY", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
