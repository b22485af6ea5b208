"""The edge side of layercast: one camera's capture, encoder, outbox, enhancement store and link.

Modules (one concern each): ``config`` (EdgeConfig), ``sources`` (frame sources and the pacer),
``frame_queue`` (drop-oldest capture queue), ``encoder`` (codec on a worker thread, batching),
``channel`` (gRPC channel: TLS, keepalive, sizes), ``requests`` (answering enhancement requests),
``outbox`` (SQLite queue of unacknowledged base frames), ``enhancement_store`` (bounded on-disk
enhancement layers), ``backoff``, ``link`` (the EdgeLink gRPC client), ``stats`` (counters),
``app`` (EdgeApp wiring it all) and ``cli`` (``layercast edge``).
"""
