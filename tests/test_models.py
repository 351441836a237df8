"""Several named models on one server, as heads over one resident backbone: each answers
by its own head over gRPC, HTTP and KServe by name; they share one backbone session and
batch through it together; a bad version of one is refused while the others answer; a
model dropped from the registry's index drains and goes; a registry with only the
default model is served as before."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from examples.colour_model import COLOURS, publish_backbone, publish_colour_version
from tests.support import (
    ORDER,
    SHIFTS,
    ServerThread,
    http_call,
    publish_named,
    publish_three_models,
    run_triton_probe,
    serve_three_models,
    shifted,
    solid_image,
    tlserve,
)
from tlserve.clients import TlserveClient, errors
from tlserve.server.errors import InvalidInput
from tlserve.server.registry import Registry


@pytest.fixture
def three_models(tmp_path: Path) -> Iterator[ServerThread]:
    server = serve_three_models(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_each_model_answers_with_its_own_head_on_one_backbone(
    three_models: ServerThread,
) -> None:
    with TlserveClient(three_models.target) as client:
        served = client.served_models()
        assert [(m.name, m.is_default) for m in served] == [
            ("tlserve", True),
            ("shift-one", False),
            ("shift-two", False),
        ]
        assert all(m.version for m in served)
        for colour in COLOURS:
            image = solid_image(colour)
            assert client.predict_one(image).top[0].label == colour
            assert client.predict_one(image, model="tlserve").top[0].label == colour
            for name, shift in SHIFTS.items():
                answer = client.predict_one(image, model=name).top[0].label
                assert answer == shifted(shift)[colour], (name, colour)
        assert client.get_model(model="shift-one").model == "shift-one"
        versions, current = client.list_models(model="shift-two")
        assert [v.version for v in versions] == [current]
        assert {v.model for v in versions} == {"shift-two"}
    assert three_models.server is not None
    models = three_models.server.models
    backbones = {id(slot.current.backbone) for slot in models.slots() if slot.current}
    assert len(backbones) == 1, "three heads on one backbone share one session"
    assert len(models.backbones.resident_ids) == 1


def blue_infer_body() -> bytes:
    """A KServe v2 JSON inference of one solid blue 2x2 image, asking for its label."""
    pixels = {"name": "PIXELS", "datatype": "UINT8", "shape": [1, 2, 2, 3]}
    return json.dumps(
        {
            "inputs": [{**pixels, "data": list(COLOURS["blue"]) * 4}],
            "outputs": [{"name": "LABEL"}],
        }
    ).encode()


def test_models_by_name_over_http_and_kserve(three_models: ServerThread) -> None:
    url = three_models.http_url
    image = solid_image("red")
    headers = {"Content-Type": "image/png"}
    default = http_call(f"{url}/v1/predict", "POST", image, headers)
    named = http_call(f"{url}/v1/models/shift-one/predict", "POST", image, headers)
    assert default.status == named.status == 200
    assert default.json()["predictions"][0]["top"][0]["label"] == "red"
    assert named.json()["predictions"][0]["top"][0]["label"] == shifted(1)["red"]
    info = http_call(f"{url}/v1/models/shift-two/model").json()
    assert info["model"] == "shift-two" and info["serving"]
    versions = http_call(f"{url}/v1/models/shift-two/versions").json()
    assert versions["current_version"] == info["version"]
    index = http_call(f"{url}/v2/repository/index", "POST", b"{}").json()
    assert [(m["name"], m["state"]) for m in index] == [
        ("tlserve", "READY"),
        ("shift-one", "READY"),
        ("shift-two", "READY"),
    ]
    metadata = http_call(f"{url}/v2/models/shift-two").json()
    assert metadata["name"] == "shift-two"
    assert http_call(f"{url}/v2/models/shift-two/ready").status == 200
    body = blue_infer_body()
    inferred = http_call(f"{url}/v2/models/shift-two/infer", "POST", body)
    assert inferred.status == 200, inferred.body
    answer = inferred.json()
    assert answer["model_name"] == "shift-two"
    assert answer["outputs"][0]["data"] == [shifted(2)["blue"]]
    unknown = http_call(f"{url}/v2/models/nope/infer", "POST", body)
    assert unknown.status == 404 and "shift-one" in unknown.json()["error"]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_tritonclient_reaches_each_model_by_name(three_models: ServerThread, protocol: str) -> None:
    address = three_models.target if protocol == "grpc" else three_models.http_url.split("//")[1]
    sent = ["red", "blue", "green"]  # the probe's order
    for name, stored_as, answer_for in [
        ("tlserve", None, {c: c for c in ORDER}),  # the default model, by its served name
        ("shift-two", "shift-two", shifted(2)),
    ]:
        completed = run_triton_probe(protocol, address, name)
        assert completed.returncode == 0, completed.stderr
        report = json.loads(completed.stdout)
        assert report["model_ready"] and report["metadata"]["name"] == name
        assert report["metadata"]["versions"] == [
            three_models.registry.for_model(stored_as).current()
        ]
        expected = [answer_for[c] for c in sent]
        assert report["bytes_labels"] == report["uint8_labels"] == expected, name


def test_the_cli_lists_every_model_or_the_one_asked_for(three_models: ServerThread) -> None:
    target = three_models.target
    listing = tlserve("models", "--json", target=target)
    assert listing.returncode == 0, listing.stderr
    models = json.loads(listing.stdout)["models"]
    assert [(m["model"], m["default"]) for m in models] == [
        ("tlserve", True),
        ("shift-one", False),
        ("shift-two", False),
    ]
    for model in models:
        stored_as = None if model["default"] else model["model"]
        current = three_models.registry.for_model(stored_as).current()
        assert model["current"] == current
        assert [(v["version"], v["serving"]) for v in model["versions"]] == [(current, True)]
    one = json.loads(tlserve("--model", "shift-two", "models", "--json", target=target).stdout)
    assert [m["model"] for m in one["models"]] == ["shift-two"]
    text = tlserve("models", target=target).stdout
    assert "tlserve  (default)" in text and "shift-one" in text
    assert f"* {three_models.registry.for_model('shift-one').current()}" in text


def test_unknown_model_is_not_found_and_names_the_served_ones(
    three_models: ServerThread,
) -> None:
    with TlserveClient(three_models.target) as client, pytest.raises(errors.NotFound) as missing:
        client.predict_one(solid_image("red"), model="no-such-model")
    assert "'tlserve', 'shift-one', 'shift-two'" in str(missing.value)


def test_mixed_load_batches_models_together_and_scores_each_row_by_its_head(
    tmp_path: Path,
) -> None:
    """Five models on one backbone under concurrent mixed requests: batches hold rows of
    several models (one backbone run), and every row gets its own model's answer."""
    registry = Registry.local(tmp_path / "registry")
    publish_colour_version(registry)
    names = [f"model-{n}" for n in range(4)]
    for n, name in enumerate(names):
        publish_named(registry, name, shifted(n + 1))
    server = ServerThread(tmp_path, max_queue_delay_ms=20.0, max_batch_size=8).start()
    wrong: list[tuple[str, str, str]] = []

    def load(worker: int) -> None:
        with TlserveClient(server.target) as client:
            for n in range(30):
                colour = ORDER[(worker + n) % 3]
                index = (worker + n) % 5
                model = "" if index == 0 else names[index - 1]
                expected = colour if index == 0 else shifted(index)[colour]
                label = client.predict_one(solid_image(colour), model=model).top[0].label
                if label != expected:
                    wrong.append((model, colour, label))

    try:
        workers = [threading.Thread(target=load, args=(w,)) for w in range(10)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert wrong == []
        batch_sizes = server.metrics_registry.get_sample_value
        batches = batch_sizes("tlserve_batch_size_count") or 0
        images = batch_sizes("tlserve_batch_size_sum") or 0
        assert images == 300
        assert batches < images, "some batches held requests for several models"
    finally:
        server.stop()


def test_a_bad_version_of_one_model_is_refused_while_the_others_answer(
    three_models: ServerThread, tmp_path: Path
) -> None:
    registry = Registry.local(tmp_path / "registry").for_model("shift-one")
    good = registry.current()
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with TlserveClient(three_models.target) as client:
            while not stop.is_set():
                try:
                    assert client.predict_one(solid_image("green")).top[0].label == "green"
                    label = client.predict_one(solid_image("green"), model="shift-two").top[0]
                    assert label.label == shifted(2)["green"]
                except (errors.ApiError, AssertionError) as exc:
                    failures.append(repr(exc))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        # A head that is not ONNX at all: refused by verification.
        bad = registry.publish_version(
            head_onnx=b"not an onnx graph",
            labels=["red", "green", "blue"],
            backbone=publish_backbone(registry),
            head_input="features",
            head_output="probabilities",
        )
        registry.set_current(bad, expected=good)
        assert three_models.server is not None
        swaps = three_models.metrics_registry.get_sample_value
        refused = {"model": "shift-one", "result": "refused"}
        wait_for(lambda: (swaps("tlserve_model_swaps_total", refused) or 0) >= 1)
        time.sleep(0.3)
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert failures == []
    with TlserveClient(three_models.target) as client:
        assert client.get_model(model="shift-one").version == good


def test_a_model_dropped_from_the_index_drains_and_goes(
    three_models: ServerThread, tmp_path: Path
) -> None:
    registry = Registry.local(tmp_path / "registry")
    assert three_models.server is not None
    models = three_models.server.models
    leaving = models.get("shift-two")
    info = three_models.metrics_registry.get_sample_value
    for name in ("tlserve", "shift-one", "shift-two"):  # each model's own series
        assert info("tlserve_model_swaps_total", {"model": name, "result": "full"}) == 1
    with leaving.lease() as held:  # a request still under way on it
        registry.remove_model("shift-two")
        wait_for(lambda: "shift-two" not in models.names())
        assert held.leases == 1 and not held.wait_drained(0)
    assert held.wait_drained(5), "released once its last request ended"
    with TlserveClient(three_models.target) as client:
        with pytest.raises(errors.NotFound):
            client.predict_one(solid_image("red"), model="shift-two")
        assert [m.name for m in client.served_models()] == ["tlserve", "shift-one"]
        assert client.predict_one(solid_image("red"), model="shift-one").top[0].label == "green"
    assert info("tlserve_model_info", {"model": "shift-two", **_info_labels(held)}) is None
    assert info("tlserve_model_swaps_total", {"model": "shift-two", "result": "full"}) is None
    assert info("tlserve_model_swaps_total", {"model": "shift-one", "result": "full"}) == 1


def _info_labels(model: object) -> dict[str, str]:
    version = getattr(model, "version")  # noqa: B009 (a LoadedModel)
    backbone = getattr(model, "backbone").id[:12]  # noqa: B009
    return {"version": version, "backbone": backbone, "provider": "CPUExecutionProvider"}


def test_more_models_than_the_limit_are_refused_by_name(tmp_path: Path) -> None:
    publish_three_models(tmp_path)
    server = ServerThread(tmp_path, max_models=2).start()
    try:
        with TlserveClient(server.target) as client:
            assert client.predict_one(solid_image("red"), model="shift-one").top
            with pytest.raises(errors.ApiError) as refused:
                client.predict_one(solid_image("red"), model="shift-two")
        assert refused.value.status == grpc.StatusCode.FAILED_PRECONDITION
        assert "TLSERVE_MAX_MODELS" in str(refused.value)
    finally:
        server.stop()


def test_a_registry_without_named_models_serves_its_model_as_the_default(
    tmp_path: Path,
) -> None:
    """The layout every earlier release wrote (CURRENT, versions/): no index, no change."""
    registry = Registry.local(tmp_path / "registry")
    version = publish_colour_version(registry)
    assert registry.model_names() == []
    assert not (tmp_path / "registry" / "MODELS").exists()
    assert sorted(p.name for p in (tmp_path / "registry").iterdir() if p.is_dir()) == [
        "backbones",
        "versions",
    ]
    server = ServerThread(tmp_path).start()
    try:
        with TlserveClient(server.target) as client:
            assert [(m.name, m.version) for m in client.served_models()] == [("tlserve", version)]
            assert client.predict_one(solid_image("blue")).top[0].label == "blue"
    finally:
        server.stop()


def test_model_names_are_checked_and_retention_keeps_shared_backbones(tmp_path: Path) -> None:
    registry = Registry.local(tmp_path / "registry")
    for bad in ("Upper", "-dash-first", "a/b", "x" * 64, ""):
        with pytest.raises(InvalidInput):
            registry.add_model(bad)
    first = publish_colour_version(registry)  # the default model, on backbone A
    dropped_backbone = registry.model_manifest(first).backbone_id
    named = registry.for_model("kept")
    registry.add_model("kept")
    publish_colour_version(named, scale=2.0)  # the named model, on backbone B
    for _ in range(3):
        publish_colour_version(registry, scale=3.0)  # newer default versions, backbone C
    a_day_later = datetime.now(UTC) + timedelta(days=1, minutes=1)
    assert len(registry.retain(keep_versions=1, now=a_day_later)) == 3
    assert registry.versions() == [registry.current()]
    # Backbone A went with the default model's old versions; B, which only the named
    # model uses, survives the default model's retention.
    assert not registry.has_backbone(dropped_backbone)
    kept = named.model_manifest(named.current() or "").backbone_id
    assert registry.has_backbone(kept)
    assert named.versions() == [named.current()]


def test_feedback_for_one_model_never_reaches_another(three_models: ServerThread) -> None:
    """Labels, kept predictions, suggestions, approvals and training requests are each
    model's own, over gRPC and HTTP."""
    with TlserveClient(three_models.target) as client:
        named = client.predict_one(solid_image("red", (20, 24)), model="shift-one")
        client.predict_one(solid_image("green", (22, 26)))  # one for the default model
        # A prediction id belongs to the model that answered.
        with pytest.raises(errors.NotFound):
            client.submit_feedback("red", prediction_id=named.prediction_id)
        stored = client.submit_feedback(
            "scarlet", prediction_id=named.prediction_id, model="shift-one"
        )
        assert not stored.duplicate
        client.submit_feedback("blue", image=solid_image("blue", (30, 30)))
        assert {c.label for c in client.list_labels(model="shift-one")} == {"scarlet"}
        assert {c.label for c in client.list_labels()} == {"blue"}
        assert client.list_labels(model="shift-two") == []
        # Suggestions come from each model's own kept predictions.
        suggested = client.suggest_labels(5, images=False)
        assert suggested and all(s.prediction_id != named.prediction_id for s in suggested)
        assert client.suggest_labels(5, images=False, model="shift-one") == []  # labeled
        live = client.get_model(model="shift-one")
        assert live.live_feedback_count == 1 and live.live_accuracy == 0.0
        assert client.get_model().live_feedback_count == 0
    url = three_models.http_url
    body = json.dumps({"label": "teal", "image_base64": _b64(solid_image("green"))}).encode()
    sent = http_call(
        f"{url}/v1/models/shift-two/feedback", "POST", body, {"Content-Type": "application/json"}
    )
    assert sent.status == 200, sent.body
    labels = http_call(f"{url}/v1/models/shift-two/labels").json()["labels"]
    assert [entry["label"] for entry in labels] == ["teal"]
    assert all(e["label"] != "teal" for e in http_call(f"{url}/v1/labels").json()["labels"])
    counted = three_models.metrics_registry.get_sample_value
    for model, accepted in (("tlserve", 1), ("shift-one", 1), ("shift-two", 1)):
        assert counted("tlserve_feedback_total", {"model": model, "result": "accepted"}) == accepted
    assert counted("tlserve_feedback_total", {"model": "tlserve", "result": "rejected"}) == 1


def _b64(data: bytes) -> str:
    import base64  # noqa: PLC0415

    return base64.b64encode(data).decode()


SCOPED = "label-token-for-shift-one-only"
EVERYWHERE = "predict-token-for-every-model"


@pytest.fixture
def scoped_server(tmp_path: Path) -> Iterator[ServerThread]:
    server = serve_three_models(
        tmp_path, f"label@shift-one {SCOPED} one\npredict {EVERYWHERE} all\n"
    )
    try:
        yield server
    finally:
        server.stop()


def test_a_token_scoped_to_a_model_is_refused_on_the_others(scoped_server: ServerThread) -> None:
    image = solid_image("red")
    with TlserveClient(scoped_server.target, token=SCOPED) as client:
        assert client.predict_one(image, model="shift-one").top[0].label == shifted(1)["red"]
        client.submit_feedback("red", image=image, model="shift-one")
        for call in (
            lambda: client.predict_one(image, model="shift-two"),
            lambda: client.predict_one(image),
            lambda: client.submit_feedback("red", image=image),
            lambda: client.list_labels(model="shift-two"),
            lambda: client.suggest_labels(3, model="tlserve"),
        ):
            with pytest.raises(errors.PermissionDenied, match="may use the models shift-one"):
                call()
        assert [m.name for m in client.served_models()] == ["shift-one"]
    with TlserveClient(scoped_server.target, token=EVERYWHERE) as client:
        assert len(client.served_models()) == 3
        assert client.predict_one(image, model="shift-two").top
    # Without a credential, a model name tells nothing: 401 before any lookup.
    with TlserveClient(scoped_server.target) as client, pytest.raises(errors.Unauthenticated):
        client.predict_one(image, model="no-such-model")
    url = scoped_server.http_url
    body = blue_infer_body()
    assert http_call(f"{url}/v2/models/no-such-model/infer", "POST", body).status == 401
    assert http_call(f"{url}/v2/models/shift-two").status == 401


def test_a_scope_naming_no_valid_model_stops_the_server(tmp_path: Path) -> None:
    from tlserve.server.security.tokens import TokenConfigError, tokens_from_file  # noqa: PLC0415

    with pytest.raises(TokenConfigError, match="must name models after `@`"):
        tokens_from_file(f"label@Bad/Name {SCOPED}\n", "tokens file")
    with pytest.raises(TokenConfigError, match="must name models after `@`"):
        tokens_from_file(f"label@ {SCOPED}\n", "tokens file")
    (entry,) = tokens_from_file(f"label@a,b {SCOPED} both\n", "tokens file")
    assert entry.models == frozenset({"a", "b"})
