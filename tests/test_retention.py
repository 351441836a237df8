"""Registry retention: newest N versions, CURRENT and the version it replaced, and the
backbones they use survive; everything else goes, but a backbone published lately and
not used yet stays (a run of another model may be about to publish a version on it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from examples.colour_model import publish_backbone, publish_colour_version
from tlserve.server.experiments import propose_challenger
from tlserve.server.registry import Registry
from tlserve.server.registry.experiment import ExperimentState


def a_day_later() -> datetime:
    """A moment past the grace of everything published so far."""
    return datetime.now(UTC) + timedelta(days=1, minutes=1)


def test_retention_keeps_current_its_parent_and_their_backbones(registry: Registry) -> None:
    replaced = publish_colour_version(registry, size=20, make_current=False)
    middle = [publish_colour_version(registry, size=24, make_current=False) for _ in range(3)]
    current = publish_colour_version(registry, size=28, parent=replaced)
    newer = [publish_colour_version(registry, size=24, make_current=False) for _ in range(2)]
    unused = publish_backbone(registry, size=40)
    removed = registry.retain(keep_versions=2, now=a_day_later())
    assert set(removed) == set(middle)
    assert set(registry.versions()) == {replaced, current, *newer}
    assert registry.current() == current
    assert not registry.has_backbone(unused.id)
    for version in registry.versions():
        manifest = registry.model_manifest(version)
        registry.verify_version(manifest)
        registry.read_backbone_onnx(manifest.backbone_id)


def test_a_backbone_published_lately_survives_retention_until_a_version_uses_it(
    registry: Registry,
) -> None:
    """Two models' runs on one registry: one has published its backbone and is still
    training when the other's retention runs. Deleting the backbone then failed the first
    run's publication ("backbone ... must be published before a version using it", seen
    in `make demo` with two models)."""
    publish_colour_version(registry, size=20)
    in_flight = publish_backbone(registry, size=40)
    registry.retain(keep_versions=2)
    assert registry.has_backbone(in_flight.id)
    # Still unused a day later: the run that published it is long gone.
    registry.retain(keep_versions=2, now=a_day_later())
    assert not registry.has_backbone(in_flight.id)


def test_a_running_experiments_challenger_survives_retention(registry: Registry) -> None:
    """An admin may start an experiment of an older version: retention must not delete the
    challenger a server has to load after a restart."""
    challenger = publish_colour_version(registry, make_current=False)
    champion = publish_colour_version(registry)
    newer = [publish_colour_version(registry, make_current=False) for _ in range(3)]
    propose_challenger(registry, champion, challenger, "shadow", 1.0, by="test")
    removed = registry.retain(keep_versions=2, now=a_day_later())
    assert challenger not in removed and challenger in registry.versions()
    assert set(removed) == {newer[0]}
    experiment, raw = registry.experiment()
    assert experiment is not None
    registry.replace_experiment(raw, experiment.ended(ExperimentState.ABANDONED, "test", "done"))
    assert challenger in registry.retain(keep_versions=2, now=a_day_later())
