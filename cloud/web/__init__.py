"""The operator web page (``layercast web``; also started by ``layercast demo``).

A Starlette app served by uvicorn. It reaches the cloud only through the cloud's
public gRPC API (Operator and Analytics), so it runs beside the cloud's gRPC
server in the same process and event loop, or on its own against a remote cloud.

    from layercast.cloud.web.app import build_web_server, create_app
    from layercast.cloud.web.settings import WebSettings, demo_settings
"""
