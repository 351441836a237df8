"""The HTTP adapter end to end against a real server: tlserve's /v1 calls from a browser
or a shell script (with the real curl), the KServe v2 REST side, and its metrics."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from examples.colour_model import publish_colour_version
from tests.support import ServerThread, http_call, multipart, solid_image
from tlserve.clients import TlserveClient
from tlserve.server.registry import Registry


def test_predict_a_raw_body_and_multipart_parts(served: ServerThread) -> None:
    raw = http_call(
        f"{served.http_url}/v1/predict?top_k=2",
        "POST",
        solid_image("blue"),
        {"Content-Type": "image/png"},
    )
    assert raw.status == 200
    document = raw.json()
    assert document["model_version"] == served.registry.current()
    (prediction,) = document["predictions"]
    assert prediction["top"][0]["label"] == "blue" and len(prediction["top"]) == 2
    body, headers = multipart(
        [("image", solid_image("red"), "a.png"), ("image", solid_image("green"), "b.png")]
    )
    parts = http_call(f"{served.http_url}/v1/predict", "POST", body, headers).json()
    assert [p["top"][0]["label"] for p in parts["predictions"]] == ["red", "green"]


def test_feedback_labels_and_suggestions(served: ServerThread) -> None:
    url = served.http_url
    predicted = http_call(f"{url}/v1/predict", "POST", solid_image("red")).json()
    prediction_id = predicted["predictions"][0]["prediction_id"]
    by_id = http_call(
        f"{url}/v1/feedback",
        "POST",
        json.dumps({"label": "red", "prediction_id": prediction_id}).encode(),
        {"Content-Type": "application/json"},
    )
    assert by_id.status == 200 and by_id.json()["label"] == "red"
    body, headers = multipart(
        [
            ("image", solid_image("green"), "g.png"),
            ("label", b"green", None),
            ("source", b"web", None),
        ]
    )
    uploaded = http_call(f"{url}/v1/feedback", "POST", body, headers).json()
    assert uploaded["label"] == "green" and not uploaded["duplicate"]
    labels = http_call(f"{url}/v1/labels").json()
    assert {entry["label"] for entry in labels["labels"]} == {"red", "green"}
    assert labels["total_samples"] == 2

    http_call(f"{url}/v1/predict", "POST", solid_image("blue"))
    suggestions = http_call(f"{url}/v1/suggestions?count=1&strategy=margin").json()["suggestions"]
    (suggestion,) = suggestions
    png = base64.b64decode(suggestion["image_png_base64"])
    assert Image.open(io.BytesIO(png)).size == (32, 32)
    assert suggestion["prediction_id"] != prediction_id  # labeled ones are not suggested


def test_models_and_admin_calls(tmp_path: Path) -> None:
    registry = Registry.local(tmp_path / "registry")
    first = publish_colour_version(registry)
    second = publish_colour_version(registry, parent=first)
    server = ServerThread(
        tmp_path, admin_tokens="admin-token-0123456789", anonymous_role="label"
    ).start()
    try:
        url = server.http_url
        server.wait_for_version(second)
        listing = http_call(f"{url}/v1/models").json()
        assert listing["current_version"] == second
        assert [m["version"] for m in listing["models"]] == [second, first]
        served = http_call(f"{url}/v1/model").json()
        assert served["serving"] and served["labels"] == ["red", "green", "blue"]
        assert http_call(f"{url}/v1/models/{first}").json()["serving"] is False
        auth = {
            "Authorization": "Bearer admin-token-0123456789",
            "Content-Type": "application/json",
        }
        rolled = http_call(f"{url}/v1/rollback", "POST", b"{}", auth).json()
        assert rolled == {"previous_version": second, "current_version": first}
        assert registry.current() == first
        request_id = http_call(f"{url}/v1/training", "POST", b'{"reason": "now"}', auth).json()
        assert request_id["request_id"] >= 1
    finally:
        server.stop()


def test_kserve_rest_with_json_tensors(served: ServerThread) -> None:
    url = served.http_url
    assert http_call(f"{url}/v2/health/live").json() == {"live": True}
    assert http_call(f"{url}/v2/health/ready").status == 200
    pixels = [[[[230, 20, 20]] * 32] * 32]
    request = {
        "id": "json-1",
        "inputs": [
            {"name": "PIXELS", "datatype": "UINT8", "shape": [1, 32, 32, 3], "data": pixels}
        ],
        "outputs": [{"name": "LABEL"}, {"name": "PROBABILITIES"}],
    }
    reply = http_call(f"{url}/v2/models/tlserve/infer", "POST", json.dumps(request).encode())
    document = reply.json()
    assert reply.status == 200 and document["id"] == "json-1"
    label, probabilities = document["outputs"]
    assert label["data"] == ["red"] and probabilities["shape"] == [1, 3]
    assert sum(probabilities["data"]) == pytest.approx(1.0, abs=1e-5)
    images = {
        "inputs": [
            {
                "name": "IMAGE",
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(solid_image("green")).decode()],
            }
        ],
        "outputs": [{"name": "PROBABILITIES", "parameters": {"classification": 1}}],
    }
    classified = http_call(f"{url}/v2/models/tlserve/infer", "POST", json.dumps(images).encode())
    assert classified.json()["outputs"][0]["data"][0].endswith(":1:green")


def test_not_ready_before_a_model(empty_server: ServerThread) -> None:
    url = empty_server.http_url
    assert http_call(f"{url}/v2/health/live").status == 200
    assert http_call(f"{url}/v2/health/ready").status == 503
    predicted = http_call(f"{url}/v1/predict", "POST", solid_image("red"))
    assert (
        predicted.status == 503 and "no model version is being served" in predicted.json()["error"]
    )
    assert predicted.headers["Retry-After"] == "5"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readme_curl_commands(served: ServerThread, tmp_path: Path) -> None:
    image = tmp_path / "red.png"
    image.write_bytes(solid_image("red"))

    def curl(*args: str) -> dict[str, object]:
        completed = subprocess.run(
            ["curl", "-sS", "--fail-with-body", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr
        return json.loads(completed.stdout)

    url = served.http_url
    predicted = curl("-F", f"image=@{image}", f"{url}/v1/predict")
    prediction_id = predicted["predictions"][0]["prediction_id"]  # type: ignore[index]
    labeled = curl(
        "-H",
        "Content-Type: application/json",
        "-d",
        json.dumps({"prediction_id": prediction_id, "label": "red"}),
        f"{url}/v1/feedback",
    )
    assert labeled["label"] == "red"
    assert curl("-F", f"image=@{image}", "-F", "label=red", f"{url}/v1/feedback")["label"] == "red"
    metadata = curl(f"{url}/v2/models/tlserve")
    assert metadata["inputs"][1]["shape"] == [-1, 32, 32, 3]  # type: ignore[index]


def test_http_requests_are_counted_with_their_protocol(served: ServerThread) -> None:
    http_call(f"{served.http_url}/v1/predict", "POST", solid_image("red"))
    http_call(f"{served.http_url}/v1/predict", "POST", b"junk")
    assert served.server is not None and served.server.metrics_port
    scrape = http_call(f"http://127.0.0.1:{served.server.metrics_port}/metrics").body.decode()
    counts = {
        (s.labels["protocol"], s.labels["method"], s.labels["code"]): s.value
        for family in text_string_to_metric_families(scrape)
        if family.name == "tlserve_requests"
        for s in family.samples
        if s.name == "tlserve_requests_total"
    }
    assert counts[("http", "Predict", "200")] == 1
    assert counts[("http", "Predict", "400")] == 1


def test_a_listing_leaves_out_each_versions_training_history(tmp_path: Path) -> None:
    """GET /v1/models embedded every version's per-epoch history (about 10 KB each) in a
    list call; it stays in GetModel, and the listing says where it went."""
    history = {
        "loss": [1.0 - i / 100 for i in range(100)],
        "accuracy": [i / 100 for i in range(100)],
    }
    registry = Registry.local(tmp_path / "registry")
    version = publish_colour_version(registry, card={"training": {"seed": 7, "history": history}})
    server = ServerThread(tmp_path).start()
    try:
        listed = http_call(f"{server.http_url}/v1/models").json()["models"][0]
        assert listed["card"]["training"] == {"seed": 7, "history": "in GetModel"}
        one = http_call(f"{server.http_url}/v1/models/{version}").json()
        assert one["card"]["training"]["history"] == history
        with TlserveClient(server.target) as client:
            (summary,), _ = client.list_models()
            assert summary.card["training"]["history"] == "in GetModel"
            assert client.get_model(version).card["training"]["history"] == history
    finally:
        server.stop()
