"""What the labeling page stands on, through the real client and the real HTTP adapter:
undo (RetractLabel) with its permissions, "labels today" (ListLabels' added_after), and
the page itself: served open, with a strict content security policy, from the package."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from examples.colour_model import publish_colour_version
from tests.support import HttpReply, ServerThread, http_call, label_samples, solid_image
from tlserve.clients import TlserveClient
from tlserve.clients.errors import ApiError as ClientError

ANN = "label-token-ann-0123456789abcdef"
BOB = "label-token-bob-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"


@pytest.fixture
def labeled(tmp_path: Path) -> Iterator[ServerThread]:
    publish_colour_version(ServerThread(tmp_path).registry)
    server = ServerThread(
        tmp_path, label_tokens=f"{ANN},{BOB}", admin_tokens=ADMIN, anonymous_role="none"
    ).start()
    try:
        yield server
    finally:
        server.stop()


def _json(server: ServerThread, path: str, token: str, body: object | None = None) -> HttpReply:
    return http_call(
        f"{server.http_url}{path}",
        "POST" if body is not None else "GET",
        json.dumps(body).encode() if body is not None else None,
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


def test_undo_over_grpc_takes_the_label_out_and_only_its_labeler_may(
    labeled: ServerThread,
) -> None:
    with (
        TlserveClient(labeled.target, token=ANN) as ann,
        TlserveClient(labeled.target, token=BOB) as bob,
        TlserveClient(labeled.target, token=ADMIN) as admin,
    ):
        prediction = ann.predict_one(solid_image("red"))
        receipt = ann.submit_feedback("green", prediction_id=prediction.prediction_id)
        assert label_samples(ann.list_labels()) == {"green": 1}

        with pytest.raises(ClientError) as refused:
            bob.retract_label(receipt.sample_id)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "only its labeler or an admin" in str(refused.value)

        assert ann.retract_label(receipt.sample_id) == "green"
        assert label_samples(ann.list_labels()) == {}
        assert admin.get_model().live_feedback_count == 0
        with pytest.raises(ClientError) as again:
            ann.retract_label(receipt.sample_id)
        assert again.value.code() == grpc.StatusCode.NOT_FOUND

        # Labeled right this time; an admin may undo anyone's label.
        ann.submit_feedback("red", prediction_id=prediction.prediction_id)
        assert admin.get_model().live_accuracy == 1.0
        assert admin.retract_label(receipt.sample_id) == "red"

        with pytest.raises(ClientError) as malformed:
            ann.retract_label("not-a-sample")
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "64 lowercase hex" in str(malformed.value)


def test_labels_added_since_counts_todays_labels(labeled: ServerThread) -> None:
    with TlserveClient(labeled.target, token=ANN) as ann:
        ann.submit_feedback("red", image=solid_image("red"))
        midnight = time.time()
        ann.submit_feedback("blue", image=solid_image("blue"))
        undone = ann.submit_feedback("green", image=solid_image("green"))
        ann.retract_label(undone.sample_id)
        assert ann.labels_added_since(0) == 2
        assert ann.labels_added_since(midnight) == 1


def test_undo_and_labels_added_over_http(labeled: ServerThread) -> None:
    predicted = http_call(
        f"{labeled.http_url}/v1/predict",
        "POST",
        solid_image("red"),
        {"Authorization": f"Bearer {ANN}", "Content-Type": "image/png"},
    ).json()
    prediction_id = predicted["predictions"][0]["prediction_id"]
    stored = _json(labeled, "/v1/feedback", ANN, {"label": "red", "prediction_id": prediction_id})
    sample_id = stored.json()["sample_id"]
    today = _json(labeled, f"/v1/labels?added_after={time.time() - 60}", ANN)
    assert today.json()["labels_added"] == 1
    assert "labels_added" not in _json(labeled, "/v1/labels", ANN).json()

    refused = _json(labeled, "/v1/labels/retract", BOB, {"sample_id": sample_id})
    assert refused.status == 403
    undone = _json(labeled, "/v1/labels/retract", ANN, {"sample_id": sample_id})
    assert undone.json() == {"sample_id": sample_id, "retracted_label": "red"}
    gone = _json(labeled, "/v1/labels/retract", ANN, {"sample_id": sample_id})
    assert gone.status == 404 and "retracted already" in gone.json()["error"]
    bad_time = _json(labeled, "/v1/labels?added_after=yesterday", ANN)
    assert bad_time.status == 400 and "must be a number" in bad_time.json()["error"]


def test_the_page_is_served_open_with_a_strict_policy(labeled: ServerThread) -> None:
    page = http_call(f"{labeled.http_url}/label")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert b'src="/label/app.js"' in page.body
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    script = http_call(f"{labeled.http_url}/label/app.js")
    assert script.status == 200 and script.headers["Content-Type"].startswith("text/javascript")
    assert b"/suggestions" in script.body and b"/v1/models/" in script.body
    cached = http_call(
        f"{labeled.http_url}/label/app.js", headers={"If-None-Match": script.headers["ETag"]}
    )
    assert cached.status == 304
    assert http_call(f"{labeled.http_url}/label/../server.py").status == 404
    assert http_call(f"{labeled.http_url}/label/secrets.txt").status == 404
    root = http_call(f"{labeled.http_url}/")
    assert root.status == 200 and b"tlserve" in root.body  # redirected to the page
    # The page's data is not open: its calls need the label role like any client's.
    assert http_call(f"{labeled.http_url}/v1/suggestions").status == 401
