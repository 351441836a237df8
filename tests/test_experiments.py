"""Champion/challenger experiments end to end on real servers: a challenger head that is
clearly better is promoted, and one clearly worse abandoned, by labels sent by prediction
id over gRPC and over HTTP; canary callers stay on their side; an admin can start, promote
and abandon, and requests under load lose nothing when an experiment ends in a swap."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from examples.colour_model import COLOURS, publish_colour_version
from tests.support import (
    ADMIN,
    LABEL,
    Load,
    ServerProcess,
    ServerThread,
    colour_png,
    http_call,
    scrape,
    tlserve,
    value,
)
from tlserve.clients import TlserveClient
from tlserve.clients.errors import InvalidArgument, NotFound, PermissionDenied
from tlserve.server.experiments import propose_challenger
from tlserve.server.registry import Registry

# The flawed head calls blue "red"; the sound one answers every colour right.
FLAWED = {"red": "red", "green": "green", "blue": "red"}


def published(
    data_dir: Path, champion: dict[str, str] | None, challenger: dict[str, str] | None
) -> tuple[str, str]:
    """Two versions on one backbone: the champion (served) and the challenger."""
    registry = Registry.local(data_dir / "registry")
    first = publish_colour_version(registry, answer_for=champion)
    second = publish_colour_version(registry, answer_for=challenger, make_current=False)
    return first, second


@pytest.fixture
def better(tmp_path: Path) -> Iterator[tuple[ServerThread, str, str]]:
    champion, challenger = published(tmp_path, FLAWED, None)
    server = ServerThread(tmp_path, admin_tokens=ADMIN).start()
    try:
        yield server, champion, challenger
    finally:
        server.stop()


def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def label_by_prediction(client: TlserveClient, rounds: int) -> list[str]:
    """Predict each colour and send its true label by prediction id; the versions that
    answered."""
    answered = []
    for n in range(rounds):
        colour = list(COLOURS)[n % 3]
        result = client.predict([colour_png(COLOURS[colour], n)], top_k=1)
        answered.append(result.model_version)
        client.submit_feedback(colour, prediction_id=result.predictions[0].prediction_id)
    return answered


def test_a_clearly_better_challenger_is_promoted_by_live_labels(
    better: tuple[ServerThread, str, str],
) -> None:
    server, champion, challenger = better
    with TlserveClient(server.target, token=ADMIN) as client:
        started = client.start_experiment(challenger, "shadow", 1.0)
        assert started.state == "running" and started.champion_version == champion
        running = client.get_model().experiment
        assert running is not None and running.challenger_version == challenger
        answered = label_by_prediction(client, 20)
        assert set(answered) == {champion}, "in shadow the champion answers every request"
        answered += label_by_prediction(client, 60)
        until(lambda: client.get_model().version == challenger, "the promotion")
        served = client.get_model()
        experiment = served.experiment
        assert experiment is not None and experiment.state == "promoted"
        assert experiment.ended_by == "judge" and "better" in experiment.reason
        evidence = experiment.evidence
        assert evidence is not None and evidence.decision == "promote"
        assert evidence.losses == 0 and evidence.wins >= 5
        assert evidence.p_better <= 0.025 and evidence.win_share_low > 0.5
        # Only blue images disagree: a third of the pairs.
        assert evidence.wins == evidence.pairs - evidence.champion_correct
        assert Registry.local(server.settings.registry_path).current() == challenger
        assert label_by_prediction(client, 3) == [challenger] * 3
    as_json = tlserve("--token", ADMIN, "status", "--json", target=server.target)
    assert json.loads(as_json.stdout)["experiment"]["state"] == "promoted"
    status = tlserve("--token", ADMIN, "status", target=server.target)
    assert f"experiment: {challenger} against {champion} (shadow, 100% of requests): promoted" in (
        status.stdout
    )


def test_a_clearly_worse_challenger_is_abandoned_over_http(tmp_path: Path) -> None:
    champion, challenger = published(tmp_path, None, FLAWED)
    server = ServerThread(tmp_path, admin_tokens=ADMIN).start()
    base = f"{server.http_url}/v1/models/tlserve"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    as_json = {**headers, "Content-Type": "application/json"}
    try:
        body = json.dumps({"challenger_version": challenger, "rollout": "shadow", "share": 1.0})
        reply = http_call(f"{base}/experiment", "POST", body.encode(), as_json)
        assert reply.status == 200, reply.body
        assert json.loads(reply.body)["state"] == "running"

        def abandoned() -> bool:
            for n in range(6):
                colour = list(COLOURS)[n % 3]
                image = colour_png(COLOURS[colour], n)
                reply = http_call(f"{base}/predict", "POST", image, headers)
                answer = json.loads(reply.body)
                assert answer["model_version"] == champion
                prediction = answer["predictions"][0]["prediction_id"]
                feedback = json.dumps({"label": colour, "prediction_id": prediction}).encode()
                assert http_call(f"{base}/feedback", "POST", feedback, as_json).status == 200
            model = json.loads(http_call(f"{base}/model", headers=headers).body)
            return model["experiment"]["state"] == "abandoned"

        until(abandoned, "the abandonment")
        model = json.loads(http_call(f"{base}/model", headers=headers).body)
        assert model["version"] == champion
        experiment = model["experiment"]
        assert experiment["ended_by"] == "judge" and "worse" in experiment["reason"]
        assert experiment["evidence"]["wins"] == 0 and experiment["evidence"]["p_worse"] <= 0.025
        assert Registry.local(tmp_path / "registry").current() == champion
    finally:
        server.stop()


def judged_pairs(client: TlserveClient) -> int:
    experiment = client.get_model().experiment
    evidence = experiment.evidence if experiment else None
    return evidence.pairs if evidence else 0


def test_canary_answers_a_sticky_share_of_callers(tmp_path: Path) -> None:
    champion, challenger = published(tmp_path, None, None)
    server = ServerThread(tmp_path, admin_tokens=ADMIN, keep_max_per_second=0.0).start()
    try:
        with TlserveClient(server.target, token=ADMIN) as client:
            client.start_experiment(challenger, "canary", 0.5)
            image = colour_png(COLOURS["red"], 0)
            sides = {}
            for key in (f"user-{n}" for n in range(40)):
                first = client.predict([image], routing_key=key).model_version
                again = {client.predict([image], routing_key=key).model_version for _ in range(3)}
                assert again == {first}, f"{key} moved between versions"
                sides[key] = first
            on_challenger = sum(v == challenger for v in sides.values())
            assert set(sides.values()) == {champion, challenger}
            assert 8 <= on_challenger <= 32, on_challenger  # 40 callers at a share of 0.5
            # Both heads score every canary request: a label on either side is a pair.
            result = client.predict([image], routing_key="user-0")
            client.submit_feedback("red", prediction_id=result.predictions[0].prediction_id)
            until(lambda: judged_pairs(client) == 1, "the pair to be judged")
        samples = scrape(server)
        assert value(samples, "tlserve_estimated_accuracy_predictions", version=challenger) > 0
        running = {"challenger": challenger, "rollout": "canary"}
        assert value(samples, "tlserve_experiment_pairs", **running) == 1
        assert value(samples, "tlserve_experiment_p_better", challenger=challenger) == 1.0
    finally:
        server.stop()


def test_admins_start_promote_and_abandon_with_clear_refusals(tmp_path: Path) -> None:
    champion, challenger = published(tmp_path, None, FLAWED)
    registry = Registry.local(tmp_path / "registry")
    other_backbone = publish_colour_version(registry, size=24, make_current=False)
    server = ServerThread(tmp_path, admin_tokens=ADMIN, label_tokens=LABEL).start()
    try:
        with TlserveClient(server.target, token=LABEL) as labeler, pytest.raises(PermissionDenied):
            labeler.start_experiment(challenger)
        with TlserveClient(server.target, token=ADMIN) as admin:
            with pytest.raises(NotFound, match="no running experiment"):
                admin.end_experiment("promote")
            with pytest.raises(InvalidArgument, match="accepted: shadow, canary"):
                admin.start_experiment(challenger, "mirror")
            with pytest.raises(InvalidArgument, match="canary"):
                admin.start_experiment(challenger, "canary", 1.0)
            with pytest.raises(InvalidArgument, match="must share its backbone"):
                admin.start_experiment(other_backbone)
            with pytest.raises(InvalidArgument, match="is the champion"):
                admin.start_experiment(champion)
            with pytest.raises(NotFound):
                admin.start_experiment("20990101-000000-000000-abcd")
            admin.start_experiment(challenger, "shadow", 0.5)
            with pytest.raises(InvalidArgument, match="accepted: promote, abandon"):
                admin.end_experiment("win")
            ended = admin.end_experiment("abandon", "not today")
            assert ended.state == "abandoned" and ended.reason == "not today"
            assert admin.get_model().version == champion
            admin.start_experiment(challenger, "canary", 0.1)
            promoted = admin.end_experiment("promote")
            assert promoted.state == "promoted" and promoted.ended_by.startswith("token")
            assert admin.get_model().version == challenger
    finally:
        server.stop()


def test_requests_under_load_lose_nothing_as_experiments_start_and_end(tmp_path: Path) -> None:
    _, challenger = published(tmp_path, FLAWED, None)
    registry = Registry.local(tmp_path / "registry")
    server = ServerThread(tmp_path, admin_tokens=ADMIN, anonymous_role="label").start()
    load = Load(server.target).start(clients=6)
    try:
        with TlserveClient(server.target, token=ADMIN) as admin:
            time.sleep(0.3)
            admin.start_experiment(challenger, "canary", 0.5)
            time.sleep(0.3)
            assert admin.end_experiment("promote").state == "promoted"
            time.sleep(0.3)
            third = publish_colour_version(registry, answer_for=FLAWED, make_current=False)
            admin.start_experiment(third, "shadow", 1.0)
            time.sleep(0.3)
            # A version published directly while an experiment runs: the judge ends it.
            fourth = publish_colour_version(registry, make_current=True)
            until(lambda: admin.get_model().version == fourth, "the direct publication")
            until(
                lambda: admin.get_model().experiment.state == "abandoned",  # type: ignore[union-attr]
                "the experiment to end",
            )
            ended = admin.get_model().experiment
            assert ended is not None and f"moved to {fourth}" in ended.reason
            time.sleep(0.3)
    finally:
        codes = load.stop()
        server.stop()
    assert set(codes) == {"OK"}, (codes, load.surprises)
    assert codes["OK"] > 50


def test_an_unusable_experiment_document_is_ignored_and_serving_goes_on(tmp_path: Path) -> None:
    champion, _ = published(tmp_path, None, None)
    (tmp_path / "registry" / "EXPERIMENT").write_text("{not json")
    server = ServerThread(tmp_path, admin_tokens=ADMIN).start()
    try:
        with TlserveClient(server.target, token=ADMIN) as client:
            served = client.get_model()
            assert served.version == champion and served.experiment is None
            assert client.predict([colour_png(COLOURS["red"], 1)]).model_version == champion
    finally:
        server.stop()


def test_a_drain_during_an_experiment_refuses_only_with_unavailable(tmp_path: Path) -> None:
    """SIGTERM to a server process scoring every request with a challenger, under clients
    that predict and send feedback: every answer is OK or UNAVAILABLE, as without one."""
    champion, challenger = published(tmp_path, FLAWED, None)
    propose_challenger(
        Registry.local(tmp_path / "registry"), champion, challenger, "shadow", 1.0, by="test"
    )
    server = ServerProcess(tmp_path, drain_seconds=10.0)
    with server.start():
        with TlserveClient(server.target) as client:
            until(lambda: client.get_model().experiment is not None, "the experiment to load")
            assert client.get_model().experiment.state == "running"  # type: ignore[union-attr]
        load = Load(server.target).start(8)
        time.sleep(1.0)
        served_before = load.codes["OK"]
        server.terminate()
        assert server.wait(30) == 0, server.output()
        codes = load.stop()
    assert served_before > 20, codes
    assert set(codes) <= {"OK", "UNAVAILABLE"}, (codes, load.surprises)
