"""Relay over gRPC: the ``relay.v1`` service definition and its generated stubs (:mod:`relay.grpc.v1`),
and the conversions between its messages and Relay's types."""
