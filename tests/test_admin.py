"""Admin calls over gRPC: the token, Rollback, and TriggerTraining reaching the trainer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from examples.colour_model import publish_colour_version
from tests.support import ServerThread, solid_image, tlserve
from tlserve.clients import TlserveClient, errors
from tlserve.server.registry import Registry
from tlserve.trainer.loop import TrainerLoop
from tlserve.trainer.settings import TrainerSettings

TOKEN = "s3cret-admin-token"
LABELER = "labeler-token-0123456789"


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[ServerThread, str, str]]:
    registry = Registry.local(tmp_path / "registry")
    first = publish_colour_version(registry)
    second = publish_colour_version(
        registry, answer_for={"red": "blue", "green": "red", "blue": "green"}, parent=first
    )
    server = ServerThread(
        tmp_path, admin_tokens=TOKEN, label_tokens=LABELER, anonymous_role="predict"
    ).start()
    try:
        yield server, first, second
    finally:
        server.stop()


def test_admin_calls_need_the_token(guarded: tuple[ServerThread, str, str]) -> None:
    server, _, second = guarded
    with TlserveClient(server.target) as client:
        with pytest.raises(errors.Unauthenticated) as missing:
            client.rollback()
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "`admin` role" in missing.value.message
        assert client.get_model().version == second
    with (
        TlserveClient(server.target, token="guess-guess-guess-guess") as client,
        pytest.raises(errors.Unauthenticated),
    ):
        client.trigger_training()
    with TlserveClient(server.target, token=LABELER) as client:
        with pytest.raises(errors.PermissionDenied) as wrong:
            client.trigger_training()
        assert wrong.value.status == grpc.StatusCode.PERMISSION_DENIED
        assert "`label` role" in wrong.value.message


def test_rollback_to_the_previous_version_and_back(guarded: tuple[ServerThread, str, str]) -> None:
    server, first, second = guarded
    with TlserveClient(server.target, token=TOKEN) as client:
        assert client.predict_one(solid_image("red")).label == "blue"
        assert client.rollback() == (second, first)
        assert client.predict_one(solid_image("red")).label == "red"
        assert server.registry.current() == first
        with pytest.raises(grpc.RpcError) as no_parent:
            client.rollback()
        assert no_parent.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as unknown:
            client.rollback("20990101-000000-000000-0000")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    result = tlserve("--token", TOKEN, "models", "rollback", second, target=server.target)
    assert result.returncode == 0 and f"serving {second} (was {first})" in result.stdout


def test_trigger_training_reaches_the_trainer_loop(guarded: tuple[ServerThread, str, str]) -> None:
    server, _, _ = guarded
    result = tlserve("--token", TOKEN, "train", "--reason", "new camera", target=server.target)
    assert result.returncode == 0 and "training requested" in result.stdout
    assert server.server is not None
    settings = TrainerSettings(
        data_dir=server.settings.data_dir, min_new_labels=1000, metrics_port=None
    )
    loop = TrainerLoop(settings, server.server.store, server.registry)
    reason = loop.due()
    # Who asked is recorded with the request (the admin token's name, never the token).
    assert reason is not None and reason.startswith("requested: new camera (token:admin-")
    assert TOKEN not in reason
    record = loop.run_once(reason)  # too few labels: skipped, but handled
    assert record.result == "skipped" and "at least 2 classes" in record.reasons[0]
    assert server.server.store.pending_training_requests() == []
    assert loop.due() is None
