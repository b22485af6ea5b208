"""Importing this module registers every built-in task model."""

from layercast.shared.tasks import small_dense, small_detector, tv_dense, tv_detection

__all__ = ["small_dense", "small_detector", "tv_dense", "tv_detection"]
