"""tlserve's public client API: typed sync and asyncio clients, their domain objects and
typed errors. The generated stubs are `tlserve.proto`.

Imports only grpcio, protobuf, numpy and Pillow (never onnxruntime or TensorFlow), and
those only when a name below is first used: `tlserve.clients.command` (what both command
lines share) is then cheap to import, which the containers' health probe needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "AsyncTlserveClient": "client",
    "TlserveClient": "client",
    "tls_credentials": "client",
    "ApiError": "errors",
    **dict.fromkeys(
        (
            "Classification",
            "FeedbackItem",
            "FeedbackReceipt",
            "ImageLike",
            "LabelCount",
            "LabelSuggestion",
            "ModelSummary",
            "Prediction",
            "PredictResult",
            "StreamReceipt",
            "TrainingRun",
            "TrainingStatus",
        ),
        "types",
    ),
}

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


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
