"""ONNX Runtime sessions: execution-provider choice and session options in one place."""

from __future__ import annotations

import logging

import onnxruntime as ort

log = logging.getLogger(__name__)

_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_TENSORRT = "TensorrtExecutionProvider"


def requested_providers(choice: str) -> list[str]:
    """Providers to ask ONNX Runtime for, in priority order, for a configured choice."""
    available = set(ort.get_available_providers())
    if choice == "cpu":
        return [_CPU]
    if choice == "cuda":
        if _CUDA not in available:
            raise RuntimeError(
                "execution_provider=cuda, but this onnxruntime build has no CUDA provider; "
                "install tlserve[gpu] (onnxruntime-gpu) or use execution_provider=auto"
            )
        return [_CUDA, _CPU]
    if choice == "tensorrt":
        if _TENSORRT not in available:
            raise RuntimeError(
                "execution_provider=tensorrt, but this onnxruntime build has no TensorRT provider"
            )
        return [_TENSORRT, _CUDA, _CPU]
    if choice == "auto":
        return [_CUDA, _CPU] if _CUDA in available else [_CPU]
    raise ValueError(f"unknown execution provider {choice!r}; expected auto, cpu, cuda or tensorrt")


class SessionFactory:
    """Creates inference sessions with the configured providers and threading."""

    def __init__(self, provider_choice: str = "auto", intra_op_threads: int = 0) -> None:
        self.providers = requested_providers(provider_choice)
        if _CUDA in self.providers and hasattr(ort, "preload_dlls"):
            # onnxruntime-gpu >= 1.21 finds the CUDA/cuDNN libraries of the pip wheels this way.
            ort.preload_dlls()
        self.intra_op_threads = intra_op_threads

    def create(self, model: bytes) -> ort.InferenceSession:
        """A session over the model's bytes (the very bytes whose hash was checked)."""
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.intra_op_threads
        options.log_severity_level = 3
        session = ort.InferenceSession(model, sess_options=options, providers=self.providers)
        if session.get_providers()[0] != self.providers[0]:
            log.warning(
                "asked ONNX Runtime for %s, it runs on %s (no usable GPU?)",
                self.providers[0],
                session.get_providers()[0],
            )
        return session
