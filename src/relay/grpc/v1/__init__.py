"""The ``relay.v1`` gRPC package: ``relay.proto`` and the stubs generated from it (``make proto``)."""
