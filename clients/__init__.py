"""tlserve's public client API: typed sync and asyncio clients, and the generated stubs.

Imports only grpcio, protobuf, numpy and Pillow (never onnxruntime or TensorFlow).
"""

from clients.client import (
    AsyncTlserveClient,
    Classification,
    ModelSummary,
    Prediction,
    PredictResult,
    TlserveClient,
)

__all__ = [
    "AsyncTlserveClient",
    "Classification",
    "ModelSummary",
    "PredictResult",
    "Prediction",
    "TlserveClient",
]
