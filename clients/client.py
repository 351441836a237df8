"""Blocking and asyncio clients for tlserve.v1.Classifier, from one implementation.

Every call is written once in `calls` (request in, answer out, as domain objects); each
client only decides how to make the RPC, blocking or awaited. Both retry UNAVAILABLE
with exponential backoff (gRPC's own retry policy, so a replica restarting under a load
balancer is invisible to callers), put a deadline on every call, and raise the typed
`errors.ApiError` subclass of the status.
"""

from __future__ import annotations

import asyncio
import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

import grpc

from tlserve.clients import calls
from tlserve.clients.calls import Call
from tlserve.clients.errors import from_rpc_error
from tlserve.proto import classifier_pb2_grpc as pb_grpc

DEFAULT_TARGET = "localhost:50051"

P = ParamSpec("P")
T = TypeVar("T")
ChannelT = TypeVar("ChannelT", grpc.Channel, grpc.aio.Channel)


def _service_config(retries: int) -> str:
    return json.dumps(
        {
            # Every address the target resolves to gets calls in turn: a headless Service's
            # DNS name (one address per pod) spreads load over the pods, where one long-lived
            # connection through a ClusterIP would stay on one pod.
            "loadBalancingConfig": [{"round_robin": {}}],
            # A replica that begins to drain says so on this health service; the balancer
            # then stops picking it, instead of sending calls that its stop would cancel.
            "healthCheckConfig": {"serviceName": "liveness"},
            "methodConfig": [
                {
                    "name": [{"service": "tlserve.v1.Classifier"}],
                    "retryPolicy": {
                        "maxAttempts": max(2, retries + 1),
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ],
        }
    )


def _channel_options(
    retries: int, max_message_bytes: int, server_name: str
) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.enable_retries", 1 if retries > 0 else 0),
        ("grpc.service_config", _service_config(retries)),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return options


def tls_credentials(
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
) -> grpc.ChannelCredentials:
    """TLS channel credentials from PEM files: the CA that signed the server's certificate
    (None: the system's roots), and a client certificate and key for mutual TLS."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    return grpc.ssl_channel_credentials(
        Path(ca_file).read_bytes() if ca_file else None,
        Path(key_file).read_bytes() if key_file else None,
        Path(cert_file).read_bytes() if cert_file else None,
    )


class _Options:
    """What both clients share: deadline, bearer token, and the per-call keyword arguments."""

    def __init__(self, timeout: float, token: str) -> None:
        self.timeout = timeout
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def call_kwargs(self, call: Call[Any]) -> dict[str, Any]:
        return {"timeout": call.timeout or self.timeout, "metadata": self.metadata}


def _blocking(
    make: Callable[P, Call[T]],
) -> Callable[Concatenate[TlserveClient, P], T]:
    @functools.wraps(make)
    def method(self: TlserveClient, *args: P.args, **kwargs: P.kwargs) -> T:
        call = make(*args, **kwargs)
        try:
            response = getattr(self.stub, call.method)(
                call.request, **self._options.call_kwargs(call)
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return call.read(response)

    return method


def _awaitable(
    make: Callable[P, Call[T]],
) -> Callable[Concatenate[AsyncTlserveClient, P], Awaitable[T]]:
    @functools.wraps(make)
    async def method(self: AsyncTlserveClient, *args: P.args, **kwargs: P.kwargs) -> T:
        call = make(*args, **kwargs)
        try:
            response = await getattr(self.stub, call.method)(
                call.request, **self._options.call_kwargs(call)
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return call.read(response)

    return method


class _Client(ABC, Generic[ChannelT]):
    """The connection both clients make: a channel with tlserve's service config (retries,
    round robin, health checking), TLS when `credentials` are given, and the options every
    call carries."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        max_message_bytes: int = 64 * 1024 * 1024,
        credentials: grpc.ChannelCredentials | None = None,
        token: str = "",
        server_name: str = "",
    ) -> None:
        options = _channel_options(retries, max_message_bytes, server_name)
        self.channel: ChannelT = self._open(target, credentials, options)
        self.stub = pb_grpc.ClassifierStub(self.channel)
        self._options = _Options(timeout, token)

    @staticmethod
    @abstractmethod
    def _open(
        target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]
    ) -> ChannelT:
        """The channel: TLS with `credentials`, else plaintext."""


class TlserveClient(_Client[grpc.Channel]):
    """Blocking client. Use as a context manager, or call `close()`.

    `token` is sent as `authorization: Bearer <token>` with every call; `credentials`
    (e.g. `tls_credentials(ca_file, cert_file, key_file)`) makes the channel TLS, and
    `server_name` checks the server's certificate for that name instead of the target's
    host. `stub` is the raw generated stub, for requests the typed methods deliberately do
    not build."""

    @staticmethod
    def _open(
        target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]
    ) -> grpc.Channel:
        if credentials:
            return grpc.secure_channel(target, credentials, options)
        return grpc.insecure_channel(target, options)

    predict = _blocking(calls.predict)
    predict_one = _blocking(calls.predict_one)
    get_model = _blocking(calls.get_model)
    list_models = _blocking(calls.list_models)
    served_models = _blocking(calls.served_models)
    submit_feedback = _blocking(calls.submit_feedback)
    stream_feedback = _blocking(calls.stream_feedback)
    list_labels = _blocking(calls.list_labels)
    labels_added_since = _blocking(calls.labels_added_since)
    conflicting_samples = _blocking(calls.conflicting_samples)
    retract_label = _blocking(calls.retract_label)
    suggest_labels = _blocking(calls.suggest_labels)
    rollback = _blocking(calls.rollback)
    start_experiment = _blocking(calls.start_experiment)
    end_experiment = _blocking(calls.end_experiment)
    trigger_training = _blocking(calls.trigger_training)
    approve_labels = _blocking(calls.approve_labels)
    training_status = _blocking(calls.training_status)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the channel connects (grpc.FutureTimeoutError after `timeout`)."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> TlserveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTlserveClient(_Client[grpc.aio.Channel]):
    """asyncio client: the methods of TlserveClient, awaitable. Use `async with`."""

    @staticmethod
    def _open(
        target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]
    ) -> grpc.aio.Channel:
        if credentials:
            return grpc.aio.secure_channel(target, credentials, options)
        return grpc.aio.insecure_channel(target, options)

    predict = _awaitable(calls.predict)
    predict_one = _awaitable(calls.predict_one)
    get_model = _awaitable(calls.get_model)
    list_models = _awaitable(calls.list_models)
    served_models = _awaitable(calls.served_models)
    submit_feedback = _awaitable(calls.submit_feedback)
    stream_feedback = _awaitable(calls.stream_feedback)
    list_labels = _awaitable(calls.list_labels)
    labels_added_since = _awaitable(calls.labels_added_since)
    conflicting_samples = _awaitable(calls.conflicting_samples)
    retract_label = _awaitable(calls.retract_label)
    suggest_labels = _awaitable(calls.suggest_labels)
    rollback = _awaitable(calls.rollback)
    start_experiment = _awaitable(calls.start_experiment)
    end_experiment = _awaitable(calls.end_experiment)
    trigger_training = _awaitable(calls.trigger_training)
    approve_labels = _awaitable(calls.approve_labels)
    training_status = _awaitable(calls.training_status)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the channel connects (TimeoutError after `timeout`)."""
        async with asyncio.timeout(timeout):
            await self.channel.channel_ready()

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncTlserveClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
