"""Feedback over real gRPC: by prediction id, by image, idempotency, streams, suggestions."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from examples.colour_model import publish_colour_version
from tests.support import (
    ServerThread,
    label_samples,
    scrape,
    solid_image,
    solid_pixels,
    value,
)
from tlserve.clients import FeedbackItem, TlserveClient
from tlserve.proto import classifier_pb2 as pb
from tlserve.server.registry import Registry


def rpc_error(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def mixed_image(red: float, green: float, blue: float, size: int = 32) -> bytes:
    """A colour between the three classes: the nearer the middle, the less certain the model."""
    colour = tuple(int(255 * c) for c in (red, green, blue))
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_feedback_by_prediction_id_and_live_accuracy(served: ServerThread) -> None:
    with TlserveClient(served.target) as client:
        red = client.predict_one(solid_image("red"))
        blue = client.predict_one(solid_image("blue"))
        right = client.submit_feedback("red", prediction_id=red.prediction_id, source="alice")
        wrong = client.submit_feedback("green", prediction_id=blue.prediction_id)
        assert not right.duplicate and right.label == "red" and right.previous_label == ""
        assert right.sample_id != wrong.sample_id
        assert label_samples(client.list_labels()) == {"green": 1, "red": 1}
        model = client.get_model()
        assert model.live_feedback_count == 2 and model.live_accuracy == pytest.approx(0.5)
    samples = scrape(served)
    version = served.registry.current()
    assert value(samples, "tlserve_live_feedback_total", version=version, outcome="correct") == 1
    assert value(samples, "tlserve_live_feedback_total", version=version, outcome="wrong") == 1
    assert value(samples, "tlserve_live_accuracy", version=version) == pytest.approx(0.5)
    assert value(samples, "tlserve_feedback_total", result="accepted") == 2
    assert served.server is not None
    cached = served.server.store.features(red_backbone(served), [right.sample_id])
    assert cached[right.sample_id].shape == (3,)


def red_backbone(served: ServerThread) -> str:
    assert served.server is not None and served.server.slot.current is not None
    return served.server.slot.current.backbone.id


def test_feedback_with_images_is_content_addressed(served: ServerThread) -> None:
    with TlserveClient(served.target) as client:
        first = client.submit_feedback("cat", image=solid_image("red"))
        again = client.submit_feedback("dog", image=solid_image("red"))
        tensor = client.submit_feedback("cat", image=solid_pixels("green", 5, 7))
        assert again.sample_id == first.sample_id and again.previous_label == "cat"
        assert tensor.sample_id not in (first.sample_id,)
        assert label_samples(client.list_labels()) == {"cat": 1, "dog": 1}


def test_idempotent_retries(served: ServerThread) -> None:
    with TlserveClient(served.target) as client:
        first = client.submit_feedback("red", image=solid_image("red"), idempotency_key="k-1")
        retry = client.submit_feedback("red", image=solid_image("red"), idempotency_key="k-1")
        assert retry.duplicate and retry.sample_id == first.sample_id
        error = rpc_error(
            lambda: client.submit_feedback("blue", image=solid_image("red"), idempotency_key="k-1")
        )
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS and "k-1" in error.details()
        assert label_samples(client.list_labels()) == {"red": 1}


BAD_LABELS = {
    "": "label is empty",
    "   ": "only whitespace",
    "x" * 129: "at most 128",
    "bad\x07bell": "category Cc",
    "evil\u202eflip": "category Cf",
    "zero\u200bwidth": "ZERO WIDTH SPACE",
}


@pytest.mark.parametrize("label", list(BAD_LABELS))
def test_bad_labels_are_refused(served: ServerThread, label: str) -> None:
    with TlserveClient(served.target) as client:
        error = rpc_error(lambda: client.submit_feedback(label, image=solid_image("red")))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert BAD_LABELS[label] in error.details()
        assert label_samples(client.list_labels()) == {}


def test_unknown_prediction_and_bad_images(served: ServerThread) -> None:
    with TlserveClient(served.target) as client:
        error = rpc_error(lambda: client.submit_feedback("red", prediction_id="nope"))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "send the image itself" in error.details()
        error = rpc_error(lambda: client.submit_feedback("red", image=b"definitely not a png"))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a recognised image" in error.details()
        truncated = solid_image("red", (200, 200), "JPEG")[:300]
        error = rpc_error(lambda: client.submit_feedback("red", image=truncated))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        error = rpc_error(
            lambda: client.stub.SubmitFeedback(pb.SubmitFeedbackRequest(label="red"), timeout=5)
        )
        assert (
            error.code() == grpc.StatusCode.INVALID_ARGUMENT and "names no image" in error.details()
        )


def test_expired_prediction_must_be_resent(tmp_path: Path) -> None:
    publish_colour_version(Registry.local(tmp_path / "registry"))
    server = ServerThread(tmp_path, prediction_retention_seconds=0.2).start()
    try:
        with TlserveClient(server.target) as client:
            old = client.predict_one(solid_image("red"))
            assert server.server is not None
            server.run(server.server.keeper.flush())
            time.sleep(0.3)
            assert server.run(server.server.keeper.prune()) == 1
            error = rpc_error(
                lambda: client.submit_feedback("red", prediction_id=old.prediction_id)
            )
            assert error.code() == grpc.StatusCode.NOT_FOUND and "expired" in error.details()
    finally:
        server.stop()


def test_stream_keeps_good_items_and_reports_bad_ones(served: ServerThread) -> None:
    with TlserveClient(served.target) as client:
        kept = client.predict_one(solid_image("green"))
        items = [
            FeedbackItem("red", image=solid_image("red")),
            FeedbackItem("", image=solid_image("blue")),
            FeedbackItem("green", prediction_id=kept.prediction_id),
            FeedbackItem("blue", image=b"junk"),
            FeedbackItem("blue", image=b""),
            FeedbackItem("blue", image=solid_image("blue"), idempotency_key="s-1"),
            FeedbackItem("red", image=solid_image("blue"), idempotency_key="s-1"),
            FeedbackItem("blue", prediction_id="expired-or-never-was"),
        ]
        receipt = client.stream_feedback(items, timeout=30)
        assert (receipt.accepted, receipt.rejected) == (3, 5)
        assert [(index, code) for index, code, _ in receipt.errors] == [
            (1, "INVALID_ARGUMENT"),
            (3, "INVALID_ARGUMENT"),
            (4, "INVALID_ARGUMENT"),
            (6, "ALREADY_EXISTS"),
            (7, "NOT_FOUND"),
        ]
        assert "label is empty" in receipt.errors[0][2]
        assert label_samples(client.list_labels()) == {"blue": 1, "green": 1, "red": 1}


def test_suggestions_are_the_uncertain_unlabeled_ones(served: ServerThread) -> None:
    with TlserveClient(served.target) as client:
        certain = [client.predict_one(solid_image(c)) for c in ("red", "green", "blue")]
        unsure = [
            client.predict_one(mixed_image(*mix))
            for mix in ((0.5, 0.5, 0.0), (0.0, 0.5, 0.5), (0.34, 0.33, 0.33), (0.5, 0.0, 0.5))
        ]
        suggestions = client.suggest_labels(4, "entropy")
        ids = [s.prediction_id for s in suggestions]
        assert set(ids) == {p.prediction_id for p in unsure}
        assert ids[0] == unsure[2].prediction_id  # the most uncertain comes first
        assert not {p.prediction_id for p in certain} & set(ids)
        picture = Image.open(io.BytesIO(suggestions[0].image_png))
        assert picture.format == "PNG" and picture.size == (32, 32)
        client.submit_feedback("grey", prediction_id=unsure[2].prediction_id)
        after = client.suggest_labels(2, "margin", images=False)
        assert unsure[2].prediction_id not in {s.prediction_id for s in after}
        assert all(s.image_png == b"" for s in after)
        error = rpc_error(lambda: client.suggest_labels(0))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "1..100" in error.details()


def test_concurrent_submitters_and_a_reader(served: ServerThread) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()

    def submit(worker: int) -> None:
        with TlserveClient(served.target) as client:
            for i in range(15):
                pixels = np.full((4, 4, 3), (worker, i, 7), dtype=np.uint8)
                try:
                    client.submit_feedback(
                        f"w{worker % 3}", image=pixels, idempotency_key=f"{worker}-{i}"
                    )
                except grpc.RpcError as exc:
                    errors.append(exc)

    def read() -> None:
        with TlserveClient(served.target) as client:
            while not stop.is_set():
                try:
                    client.list_labels()
                except grpc.RpcError as exc:
                    errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=submit, args=(w,)) for w in range(8)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
    stop.set()
    reader.join(30)
    assert errors == []
    with TlserveClient(served.target) as client:
        assert sum(label_samples(client.list_labels()).values()) == 8 * 15


def test_suggestions_never_offer_an_image_labeled_already(served: ServerThread) -> None:
    """The issue's 21 of 25: an image labeled through one prediction (or sent as a file)
    was suggested again through another prediction of it; and one image predicted twice
    filled two places in one reply."""
    mixes = [(0.5, 0.5, 0.0), (0.0, 0.5, 0.5), (0.34, 0.33, 0.33), (0.5, 0.0, 0.5)]
    images = [mixed_image(*mix) for mix in mixes]
    with TlserveClient(served.target) as client:
        first = [client.predict_one(image) for image in images]
        again = [client.predict_one(image) for image in images]  # real traffic repeats
        for strategy in ("balanced", "entropy", "margin", "least_confidence"):
            reply = client.suggest_labels(8, strategy, images=False)
            ids = {s.prediction_id for s in reply}
            for one, other in zip(first, again, strict=True):
                assert len(ids & {one.prediction_id, other.prediction_id}) <= 1, strategy
        # Labeled through the first prediction: neither prediction of it is offered.
        client.submit_feedback("yellow", prediction_id=first[0].prediction_id)
        # Labeled as a file (never through a prediction): not offered either.
        client.submit_feedback("teal", image=images[1])
        for strategy in ("balanced", "entropy", "margin", "least_confidence"):
            offered = {s.prediction_id for s in client.suggest_labels(8, strategy, images=False)}
            labeled = {p.prediction_id for p in (first[0], again[0], first[1], again[1])}
            assert not offered & labeled, strategy
            assert len(offered) == 2, strategy  # the two unlabeled images, once each
        # A file labeled before it is ever predicted is not offered once predicted.
        late = mixed_image(0.2, 0.4, 0.4)
        client.submit_feedback("teal", image=late)
        predicted = client.predict_one(late)
        offered = {s.prediction_id for s in client.suggest_labels(8, images=False)}
        assert predicted.prediction_id not in offered
