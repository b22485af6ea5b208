"""The service commands: `layercast cloud | subscribe | enhance` (cloud/cli.py), `layercast edge`
(edge/cli.py), `layercast web` (cloud/web/cli.py) and `layercast demo` (layercast/demo.py). The edge and cloud packages never import
each other; this module is where they meet."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from layercast.commands.cloud import register as register_cloud
    from layercast.commands.edge import register as register_edge
    from layercast.commands.web import register as register_web

    register_cloud(sub)
    register_web(sub)
    register_edge(sub)
    try:
        from layercast.commands.demo import register as register_demo
    except ModuleNotFoundError:
        return
    register_demo(sub)
