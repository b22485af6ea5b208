"""Code shared by the edge and the cloud: codec, bitstream format, model registry, data, task models.

`layercast.shared` imports neither `layercast.edge` nor `layercast.cloud`.
"""
