"""tlserve's public client API: typed sync and asyncio clients, and the generated stubs.

Imports only grpcio, protobuf, numpy and Pillow (never onnxruntime or TensorFlow).
"""

from tlserve.clients.client import (
    AsyncTlserveClient,
    Classification,
    FeedbackReceipt,
    LabelSuggestion,
    ModelSummary,
    Prediction,
    PredictResult,
    StreamReceipt,
    TlserveClient,
    feedback_request,
)

__all__ = [
    "AsyncTlserveClient",
    "Classification",
    "FeedbackReceipt",
    "LabelSuggestion",
    "ModelSummary",
    "PredictResult",
    "Prediction",
    "StreamReceipt",
    "TlserveClient",
    "feedback_request",
]
