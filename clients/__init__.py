"""tlserve's public client API: typed sync and asyncio clients, their domain objects and
typed errors. The generated stubs are `tlserve.proto`.

Imports only grpcio, protobuf, numpy and Pillow (never onnxruntime or TensorFlow).
"""

from tlserve.clients.client import AsyncTlserveClient, TlserveClient, tls_credentials
from tlserve.clients.errors import ApiError
from tlserve.clients.types import (
    Classification,
    FeedbackItem,
    FeedbackReceipt,
    ImageLike,
    LabelCount,
    LabelSuggestion,
    ModelSummary,
    Prediction,
    PredictResult,
    StreamReceipt,
    TrainingRun,
    TrainingStatus,
)

__all__ = [
    "ApiError",
    "AsyncTlserveClient",
    "Classification",
    "FeedbackItem",
    "FeedbackReceipt",
    "ImageLike",
    "LabelCount",
    "LabelSuggestion",
    "ModelSummary",
    "PredictResult",
    "Prediction",
    "StreamReceipt",
    "TlserveClient",
    "TrainingRun",
    "TrainingStatus",
    "tls_credentials",
]
