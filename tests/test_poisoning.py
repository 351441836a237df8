"""Poisoning and leaks, tried as an unprivileged client would against a real server: no
relabeling, no reading others' images or labels, no new class slipping into training,
no short class stopping everyone's training, no huge images kept."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from examples.colour_model import publish_colour_version
from tests.support import (
    ADMIN,
    LABEL,
    PREDICT,
    ServerThread,
    label_samples,
    solid_image,
    tlserve,
)
from tlserve.clients import TlserveClient, errors
from tlserve.server.registry import Registry


def _server(tmp_path: Path, **settings: object) -> ServerThread:
    publish_colour_version(Registry.local(tmp_path / "registry"))
    return ServerThread(
        tmp_path, predict_tokens=PREDICT, label_tokens=LABEL, admin_tokens=ADMIN, **settings
    ).start()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServerThread]:
    # What a server with credentials does by default.
    server = _server(tmp_path, new_class_policy="quarantine")
    yield server
    server.stop()


def test_an_unprivileged_client_can_neither_relabel_nor_read(served: ServerThread) -> None:
    with TlserveClient(served.target, token=LABEL) as labeler:
        prediction = labeler.predict_one(solid_image("red"))
        stored = labeler.submit_feedback("red", image=solid_image("red"))
    for token, refused in (("", errors.Unauthenticated), (PREDICT, errors.PermissionDenied)):
        with TlserveClient(served.target, token=token) as outsider:
            with pytest.raises(refused):
                outsider.submit_feedback("blue", image=solid_image("red"))  # relabel
            with pytest.raises(refused):
                outsider.submit_feedback("blue", prediction_id=prediction.prediction_id)
            with pytest.raises(refused):
                outsider.suggest_labels(5)  # others' images
            with pytest.raises(refused):
                outsider.list_labels()
    assert served.server is not None
    history = served.server.store.label_history(stored.sample_id)
    assert [record.label for record in history] == ["red"]


def test_a_new_class_stays_quarantined_until_enough_labelers_or_approval(
    tmp_path: Path,
) -> None:
    """Quarantine, with the default quorum of 5: it counts distinct principals, not images.
    One label token sending five PNGs that differ by a pixel admitted `solo-class`."""
    labelers = [f"label-token-{n}-0123456789abcdef" for n in range(5)]
    tokens = tmp_path / "tokens"
    tokens.write_text(
        "".join(f"label {token} labeler-{n}\n" for n, token in enumerate(labelers))
        + f"admin {ADMIN} admin\n"
    )
    server = _server(tmp_path, new_class_policy="quarantine", tokens_file=tokens)
    try:
        with TlserveClient(server.target, token=labelers[0]) as solo:
            for shade in range(5):
                solo.submit_feedback("solo-class", image=solid_image("red", (20 + shade, 20)))
            solo_class = {c.label: c for c in solo.list_labels()}["solo-class"]
            assert (solo_class.status, solo_class.samples) == ("quarantined", 5)
            assert solo_class.labelers_needed == 4 and solo_class.images_needed == 4
            with pytest.raises(errors.PermissionDenied):
                solo.approve_labels(["solo-class"])
            solo.submit_feedback("red", image=solid_image("red"))
            assert {c.label: c.status for c in solo.list_labels()}["red"] == "known"
        for n, token in enumerate(labelers[1:4], start=1):
            with TlserveClient(server.target, token=token) as labeler:
                labeler.submit_feedback("solo-class", image=solid_image("blue", (20 + n, 30)))
        with TlserveClient(server.target, token=labelers[4]) as last:
            before = {c.label: c for c in last.list_labels()}["solo-class"]
            assert (before.status, before.labelers_needed) == ("quarantined", 1)
            last.submit_feedback("solo-class", image=solid_image("green", (40, 40)))
            assert {c.label: c.status for c in last.list_labels()}["solo-class"] == "admitted"
        with TlserveClient(server.target, token=ADMIN) as admin:
            assert admin.approve_labels([" Purple "]) == ["Purple"]
            assert admin.approve_labels(["purple"]) == ["purple"]
    finally:
        server.stop()


def test_auto_policy_is_open_only_on_a_loopback_server_without_credentials(
    tmp_path: Path,
) -> None:
    """`auto` was open on any loopback server: one with tokens tells its callers apart,
    and quarantines."""
    with_tokens = _server(tmp_path / "tokens")
    try:
        with TlserveClient(with_tokens.target, token=LABEL) as labeler:
            labeler.submit_feedback("purple", image=solid_image("red"))
            assert {c.label: c.status for c in labeler.list_labels()} == {"purple": "quarantined"}
    finally:
        with_tokens.stop()
    publish_colour_version(Registry.local(tmp_path / "open" / "registry"))
    open_server = ServerThread(tmp_path / "open").start()
    try:
        with TlserveClient(open_server.target) as anyone:
            anyone.submit_feedback("purple", image=solid_image("red"))
            assert {c.label: c.status for c in anyone.list_labels()} == {"purple": "approved"}
    finally:
        open_server.stop()


def test_closed_policy_refuses_new_labels_until_approved(tmp_path: Path) -> None:
    server = _server(tmp_path, new_class_policy="closed")
    try:
        with TlserveClient(server.target, token=LABEL) as labeler:
            labeler.submit_feedback("green", image=solid_image("green"))
            with pytest.raises(errors.InvalidArgument) as refused:
                labeler.submit_feedback("teal", image=solid_image("blue"))
            assert "new_class_policy=closed" in refused.value.message
            assert "blue, green, red" in refused.value.message
        with TlserveClient(server.target, token=ADMIN) as admin:
            admin.approve_labels(["teal"])
        with TlserveClient(server.target, token=LABEL) as labeler:
            labeler.submit_feedback("teal", image=solid_image("blue"))
            assert label_samples(labeler.list_labels()) == {"green": 1, "teal": 1}
    finally:
        server.stop()


def test_big_feedback_images_are_stored_at_the_size_training_needs(served: ServerThread) -> None:
    """The colour model takes 32x32: a 2000x1000 photo is kept as 64x32 (covering 32x32
    at its own aspect ratio), not as the megapixels that were sent."""
    noise = np.random.default_rng(0).integers(0, 255, (1000, 2000, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    with TlserveClient(served.target, token=LABEL) as labeler:
        receipt = labeler.submit_feedback("red", image=buffer.getvalue())
        small = labeler.submit_feedback("blue", image=solid_image("blue", (20, 10)))
    assert served.server is not None
    stored = served.server.store.images([receipt.sample_id, small.sample_id])
    with Image.open(io.BytesIO(stored[receipt.sample_id])) as kept:
        assert kept.size == (64, 32)
    assert len(stored[receipt.sample_id]) < len(buffer.getvalue()) / 100
    assert stored[small.sample_id] == solid_image("blue", (20, 10))  # small ones as sent


def test_feedback_images_over_the_byte_cap_are_refused(tmp_path: Path) -> None:
    server = _server(tmp_path, max_feedback_image_bytes=2048)
    try:
        noise = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noise).save(buffer, "PNG")
        with (
            TlserveClient(server.target, token=LABEL) as labeler,
            pytest.raises(errors.ResourceExhausted, match="at most 2048"),
        ):
            labeler.submit_feedback("red", image=buffer.getvalue())
    finally:
        server.stop()


def test_suggestions_are_capped_in_count_and_reply_size(tmp_path: Path) -> None:
    # 64 KiB replies hold a few 32x32 images (3 KiB each, raw) and no more.
    server = _server(tmp_path, max_suggestions=20, max_message_bytes=16 * 1024)
    try:
        with TlserveClient(server.target, token=LABEL) as labeler:
            for shade in range(30):
                labeler.predict_one(solid_image("red", (10 + shade, 10)))
            with pytest.raises(errors.InvalidArgument, match=r"1\.\.20"):
                labeler.suggest_labels(21)
            suggestions = labeler.suggest_labels(20)
        assert 1 <= len(suggestions) < 20
        assert sum(len(s.image_png) for s in suggestions) < 16 * 1024
    finally:
        server.stop()


def test_repeated_training_requests_queue_one_run(served: ServerThread) -> None:
    with TlserveClient(served.target, token=ADMIN) as admin:
        first = admin.trigger_training("one")
        assert admin.trigger_training("two") == first
        with pytest.raises(errors.ResourceExhausted) as limited:
            for _ in range(5):
                admin.trigger_training("flood")
        assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert served.server is not None
    assert len(served.server.store.pending_training_requests()) == 1


def test_a_relabel_by_another_principal_keeps_both_and_flags_the_conflict(
    tmp_path: Path,
) -> None:
    """Token B relabeled A's image: B got A's label back as `previous`, B's label replaced
    A's in training, and A could no longer retract. Now each principal holds its own
    label: a disagreement is a conflict, kept out of training and counted, until one side
    withdraws (each may retract its own) or an admin clears the sample."""
    tokens = tmp_path / "tokens"
    alice, bob = "label-token-alice-0123456789", "label-token-bob-0123456789ab"
    tokens.write_text(f"label {alice} alice\nlabel {bob} bob\nadmin {ADMIN} admin\n")
    server = _server(tmp_path, new_class_policy="open", tokens_file=tokens)
    assert server.server is not None
    store = server.server.store
    image = solid_image("red")
    try:
        with (
            TlserveClient(server.target, token=alice) as a,
            TlserveClient(server.target, token=bob) as b,
        ):
            first = a.submit_feedback("red", image=image)
            takeover = b.submit_feedback("blue", image=image)
            assert takeover.previous_label == "", "B is not told A's label"
            assert store.current_labels() == [], "a disputed sample trains nobody"
            assert store.conflicting_samples() == 1
            assert label_samples(a.list_labels()) == {}
            assert a.conflicting_samples() == 1
            shown = tlserve("--token", alice, "labels", target=server.target)
            assert "1 samples disputed" in shown.stdout, shown.stdout + shown.stderr
            # A withdraws: B's label stands alone.
            assert a.retract_label(first.sample_id) == "red"
            assert [(r.label, r.principal) for r in store.current_labels()] == [
                ("blue", "token:bob")
            ]
            assert store.conflicting_samples() == 0
            # A labels it again: disputed again; B may not retract A's label.
            a.submit_feedback("red", image=image)
            assert store.conflicting_samples() == 1
            assert b.retract_label(first.sample_id) == "blue"
            with pytest.raises(errors.PermissionDenied):
                b.retract_label(first.sample_id)
            assert [(r.label, r.principal) for r in store.current_labels()] == [
                ("red", "token:alice")
            ]
            # Agreement is not a conflict; the newest agreeing label stands for both.
            b.submit_feedback("red", image=image)
            assert store.conflicting_samples() == 0
            assert [r.principal for r in store.current_labels()] == ["token:bob"]
        with TlserveClient(server.target, token=ADMIN) as admin:
            b_label = TlserveClient(server.target, token=bob)
            with b_label:
                b_label.submit_feedback("blue", image=image)
            assert store.conflicting_samples() == 1
            # An admin's retraction clears every label of the sample.
            admin.retract_label(first.sample_id)
            assert store.current_labels() == [] and store.conflicting_samples() == 0
            admin.submit_feedback("green", image=image)
            assert [r.label for r in store.current_labels()] == ["green"]
    finally:
        server.stop()
