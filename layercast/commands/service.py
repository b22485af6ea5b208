"""The service commands: `layercast cloud | subscribe | enhance` (commands/cloud.py), `layercast
edge` (commands/edge.py), `layercast web` (commands/web.py) and `layercast demo`
(commands/demo.py). The edge and cloud packages never import each other; the commands are where
they meet."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from layercast.commands.cloud import register as register_cloud
    from layercast.commands.demo import register as register_demo
    from layercast.commands.edge import register as register_edge
    from layercast.commands.web import register as register_web

    register_cloud(sub)
    register_web(sub)
    register_edge(sub)
    register_demo(sub)
