"""Generated protobuf and gRPC code for the `layercast.v1` contracts in proto/.

Regenerate with ``python scripts/gen_proto.py``; a test fails when it is stale.
"""
