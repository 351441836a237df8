"""tlserve's API: the .proto sources and their generated Python stubs (`make protos`).

Installed as `tlserve.proto`. The client and the server both import the stubs from
here; the wire names stay `tlserve.v1` and `inference` (the Open Inference Protocol).
"""
