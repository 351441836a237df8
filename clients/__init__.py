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
        Experiment,
        ExperimentEvidence,
        FeedbackItem,
        FeedbackReceipt,
        ImageLike,
        LabelCount,
        LabelSuggestion,
        LiveMonitoring,
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
    "Experiment",
    "ExperimentEvidence",
    "FeedbackItem",
    "FeedbackReceipt",
    "ImageLike",
    "LabelCount",
    "LabelSuggestion",
    "LiveMonitoring",
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
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for module in ("client", "errors", "types"):
        home = vars(importlib.import_module(f"{__name__}.{module}"))
        if name in home:
            globals()[name] = home[name]
            return home[name]
    raise AttributeError(f"module {__name__!r} lost {name!r}")  # __all__ names every one
