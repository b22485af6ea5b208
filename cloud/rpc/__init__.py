"""The gRPC surface: servicers, interceptors, malformed requests, status mapping, health."""
