"""The gRPC surface of ``relay server`` (``relay/grpc/v1/relay.proto``): the job API (:mod:`.jobs`) and the
worker stream (:mod:`.work`), served beside HTTP by :mod:`.serve` with the same auth (:mod:`.auth`)."""
