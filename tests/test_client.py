"""The public client: one implementation behind the blocking and asyncio clients, domain
objects in and out, typed errors that carry the status and the server's message."""

from __future__ import annotations

import inspect
from pathlib import Path

import grpc
import pytest

from examples.colour_model import publish_colour_version
from tests.support import ServerThread, label_samples, scrape, solid_image, value
from tlserve.clients import ApiError, AsyncTlserveClient, FeedbackItem, TlserveClient, errors
from tlserve.server.registry import Registry


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_")
    }


def test_both_clients_have_the_same_methods_and_signatures() -> None:
    blocking, awaitable = public_methods(TlserveClient), public_methods(AsyncTlserveClient)
    assert set(blocking) == set(awaitable)
    assert {"rollback", "trigger_training", "stream_feedback", "suggest_labels"} <= set(blocking)
    for name, signature in blocking.items():
        assert list(signature.parameters) == list(awaitable[name].parameters), name
        assert inspect.iscoroutinefunction(getattr(AsyncTlserveClient, name)), name
        assert not inspect.iscoroutinefunction(getattr(TlserveClient, name)), name
    assert inspect.signature(TlserveClient) == inspect.signature(AsyncTlserveClient)


def test_no_protobuf_in_the_public_signatures() -> None:
    for cls in (TlserveClient, AsyncTlserveClient):
        for name, signature in public_methods(cls).items():
            assert "pb" not in str(signature), f"{cls.__name__}.{name}{signature}"


def test_errors_are_typed_and_carry_status_and_message(served: ServerThread) -> None:
    with TlserveClient(served.target) as client:
        with pytest.raises(errors.NotFound) as unknown:
            client.get_model("20990101-000000-000000-abcd")
        assert unknown.value.status == grpc.StatusCode.NOT_FOUND
        assert "is not in the registry" in unknown.value.message
        assert isinstance(unknown.value, ApiError) and isinstance(unknown.value, grpc.RpcError)
        with pytest.raises(errors.InvalidArgument, match="not a recognised image"):
            client.predict([b"junk"])
        with pytest.raises(ValueError, match="exactly one of prediction_id and image"):
            client.submit_feedback("red")


def test_an_unsendable_stream_item_says_which_and_what_was_stored(
    served: ServerThread, tmp_path: Path
) -> None:
    items = [
        FeedbackItem("red", image=solid_image("red")),
        FeedbackItem("blue", image=tmp_path / "missing.png"),
        FeedbackItem("green", image=solid_image("green")),
    ]
    with (
        TlserveClient(served.target) as client,
        pytest.raises(ValueError, match=r"item 1 could not be sent .*stored 1 of the 1 items"),
    ):
        client.stream_feedback(items)


def test_unreachable_server_is_unavailable() -> None:
    with (
        TlserveClient("127.0.0.1:1", timeout=2, retries=0) as client,
        pytest.raises(errors.Unavailable),
    ):
        client.list_labels()


async def test_the_async_client_does_everything_the_blocking_one_does(tmp_path: Path) -> None:
    registry = Registry.local(tmp_path / "registry")
    first = publish_colour_version(registry)
    second = publish_colour_version(registry, parent=first)
    server = ServerThread(
        tmp_path, admin_tokens="admin-token-0123456789", anonymous_role="label"
    ).start()
    try:
        server.wait_for_version(second)
        async with AsyncTlserveClient(server.target, token="admin-token-0123456789") as client:
            await client.wait_ready(10)
            prediction = await client.predict_one(solid_image("green"))
            assert prediction.label == "green"
            receipt = await client.stream_feedback(
                [
                    FeedbackItem("green", prediction_id=prediction.prediction_id),
                    FeedbackItem("blue", image=solid_image("blue")),
                    FeedbackItem("red", image=b"junk"),
                ]
            )
            assert (receipt.accepted, receipt.rejected) == (2, 1)
            assert receipt.errors[0][:2] == (2, "INVALID_ARGUMENT")
            assert label_samples(await client.list_labels()) == {"green": 1, "blue": 1}
            assert await client.trigger_training("async") >= 1
            assert await client.rollback() == (second, first)
            models, current = await client.list_models()
            assert current == first and {m.version for m in models} == {first, second}
        async with AsyncTlserveClient(server.target) as anonymous:
            with pytest.raises(errors.Unauthenticated):
                await anonymous.rollback()
    finally:
        server.stop()


def test_calls_go_round_robin_over_every_address_of_the_target(tmp_path: Path) -> None:
    """What a headless Service gives a client: one name, one address per pod. Calls must
    spread over them instead of staying on the first connection."""
    servers = []
    for name in ("a", "b"):
        publish_colour_version(Registry.local(tmp_path / name / "registry"))
        servers.append(ServerThread(tmp_path / name).start())
    try:
        target = "ipv4:" + ",".join(server.target for server in servers)
        with TlserveClient(target) as client:
            for _ in range(20):
                client.predict([solid_image("red")])
        handled = [
            value(scrape(server), "tlserve_requests_total", method="Predict", code="OK")
            for server in servers
        ]
        assert sum(handled) == 20
        assert min(handled) >= 5, handled
    finally:
        for server in servers:
            server.stop()
