"""layercast: edge-to-cloud inference over a scalable, task-compatible learned image codec."""

__version__ = "0.1.0"
