"""A registry written by the previous release's code (from this repository's history), read
by today's: its model is the default model, unchanged; named models go beside it; its
backbones, whose backbone.json has no publication time, are kept by use alone."""

from __future__ import annotations

import json
from pathlib import Path

from examples.colour_model import publish_colour_version
from tests.support import ServerThread, previous_release, run_previous_release, solid_image
from tlserve.clients import TlserveClient
from tlserve.server.registry import Registry

WRITE_WITH_THE_PREVIOUS_RELEASE = """
import json, sys
from examples.colour_model import publish_backbone, publish_colour_version
from tlserve.server.registry import Registry

registry = Registry.local(sys.argv[1])
first = publish_colour_version(registry, size=20)
current = publish_colour_version(registry, size=24, parent=first)
unused = publish_backbone(registry, size=40)
print(json.dumps({"first": first, "current": current, "unused": unused.id}))
"""


def test_a_registry_of_the_previous_release_is_served_and_grows_models(tmp_path: Path) -> None:
    code = previous_release(tmp_path / "release")
    folder = tmp_path / "data" / "registry"
    written = json.loads(run_previous_release(code, WRITE_WITH_THE_PREVIOUS_RELEASE, str(folder)))

    registry = Registry.local(folder)
    assert registry.current() == written["current"]
    assert registry.versions() == [written["current"], written["first"]]
    assert registry.model_names() == []
    registry.add_model("beside")
    named = publish_colour_version(
        registry.for_model("beside"), answer_for={"red": "blue", "green": "green", "blue": "red"}
    )
    # The unused backbone has no publication time: judged by use alone, it goes at once.
    assert registry.retain(keep_versions=10) == []
    assert not registry.has_backbone(written["unused"])
    for version in registry.versions():
        registry.verify_version(registry.model_manifest(version))

    server = ServerThread(tmp_path / "data").start()
    try:
        with TlserveClient(server.target) as client:
            served = {m.name: m.version for m in client.served_models()}
            assert served == {"tlserve": written["current"], "beside": named}
            assert client.predict_one(solid_image("red")).top[0].label == "red"
            assert client.predict_one(solid_image("red"), model="beside").top[0].label == "blue"
    finally:
        server.stop()
