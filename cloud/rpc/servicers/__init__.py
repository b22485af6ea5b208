"""Thin gRPC servicers: each turns messages into calls on the cloud's components."""
