"""Settings: defaults, TOML file, environment (which wins over the file), validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tlserve.server.settings import ServerSettings
from tlserve.trainer.settings import TrainerSettings


def test_defaults_and_registry_path() -> None:
    settings = ServerSettings()
    assert settings.port == 50051 and settings.execution_provider == "auto"
    assert settings.registry_path == Path("tlserve-data/registry")


def test_defaults_are_safe_on_an_open_network() -> None:
    """What a user gets without configuring anything: loopback only, no open admin
    calls, kept images for a day (not a week), bounded feedback and suggestions."""
    settings = ServerSettings()
    assert settings.host == "127.0.0.1" and settings.http_host is None
    assert settings.metrics_host is None and not settings.insecure
    assert settings.admin_tokens == "" and settings.tokens_file is None
    assert settings.prediction_retention_seconds <= 24 * 3600
    assert settings.feedback_rate > 0 and settings.max_suggestions <= 100
    assert settings.max_feedback_image_bytes < 48 * 1024 * 1024


def test_toml_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "tlserve.toml"
    config.write_text('port = 6000\nmax_batch_size = 8\nregistry_dir = "/srv/registry"\n')
    monkeypatch.setenv("TLSERVE_PORT", "7000")
    settings = ServerSettings.load(config)
    assert settings.port == 7000
    assert settings.max_batch_size == 8
    assert settings.registry_path == Path("/srv/registry")
    assert ServerSettings.load(config, port=1).port == 1


def test_unknown_keys_and_bad_values_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "tlserve.toml"
    config.write_text("max_bach_size = 8\n")
    with pytest.raises(ValidationError, match="max_bach_size"):
        ServerSettings.load(config)
    with pytest.raises(ValidationError, match="execution_provider"):
        ServerSettings(execution_provider="gpu")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        ServerSettings.load(tmp_path / "missing.toml")


def test_every_field_is_documented() -> None:
    for name, field in ServerSettings.model_fields.items():
        assert field.description, f"setting {name} has no docstring"


def test_the_imagenet_example_config_loads() -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "imagenet.toml"
    settings = TrainerSettings.load(example)
    assert settings.backbone == "MobileNetV2" and settings.backbone_weights == "imagenet"
    assert settings.resize == "center_crop" and settings.hidden_units == [256]


def test_empty_variables_mean_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's default column shows optional settings as empty; setting them so
    (`TLSERVE_TRAIN_EVERY_SECONDS=`) made the trainer exit 2."""
    for name in ("TRAIN_EVERY_SECONDS", "METRICS_PORT", "REGISTRY_DIR", "TLS_CERT_FILE"):
        monkeypatch.setenv(f"TLSERVE_{name}", "")
    trainer = TrainerSettings.load(None)
    assert trainer.train_every_seconds is None and trainer.metrics_port == 9465
    server = ServerSettings.load(None)
    assert server.registry_dir is None and server.metrics_port == ServerSettings().metrics_port
