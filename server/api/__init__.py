"""The gRPC surface: thin servicers over the protocol-free core, codecs, status mapping."""
