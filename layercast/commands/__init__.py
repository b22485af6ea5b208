"""Sub-commands of the layercast CLI, one module per group."""
