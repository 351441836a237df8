"""The trainer's models file: named models trained beside the default model, each with
its own settings (backbone, head, thresholds, schedule), like MLServer's per-model
settings.

    [models.odd-even]
    min_new_labels = 5

    [models.defects]
    backbone = "EfficientNetB0"
    input_size = 240
    min_accuracy = 0.8

Every key of a table is a trainer setting (the names of the settings reference, without
the TLSERVE_ prefix) that overrides, for that model alone, what the trainer's own
settings say; the default model is trained with those as they are.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import ValidationError

from tlserve.server.errors import InvalidInput
from tlserve.server.registry import check_model_name
from tlserve.trainer.settings import TrainerSettings

# Settings that are the deployment's, not a model's: one store, one registry, one process.
_SHARED = {
    "store_url",
    "registry_url",
    "registry_dir",
    "data_dir",
    "metrics_port",
    "metrics_host",
    "log_level",
    "models_file",
}


class ModelsFileError(ValueError):
    """The models file cannot be used; the message names the file, model and key."""


def load_models(path: Path, base: TrainerSettings) -> dict[str, TrainerSettings]:
    """Each named model's settings: `base` with the model's table applied."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelsFileError(f"models file {path}: {exc}") from None
    unknown = set(document) - {"models"}
    if unknown:
        raise ModelsFileError(
            f"models file {path}: unknown top-level keys {sorted(unknown)}; "
            "write one [models.<name>] table per model"
        )
    tables = document.get("models", {})
    if not isinstance(tables, dict):
        raise ModelsFileError(f"models file {path}: `models` must be a table of tables")
    models = {}
    for name, overrides in tables.items():
        try:
            check_model_name(name)
        except InvalidInput as exc:
            raise ModelsFileError(f"models file {path}: {exc}") from None
        if not isinstance(overrides, dict):
            raise ModelsFileError(f"models file {path}: [models.{name}] must be a table")
        shared = sorted(set(overrides) & _SHARED)
        if shared:
            raise ModelsFileError(
                f"models file {path}: [models.{name}] sets {shared}, which every model "
                "shares; set them in the trainer's own settings"
            )
        known = set(TrainerSettings.model_fields)
        extra = sorted(set(overrides) - known)
        if extra:
            raise ModelsFileError(
                f"models file {path}: [models.{name}] has unknown settings {extra}"
            )
        try:
            models[name] = type(base)(**{**base.model_dump(), **overrides})
        except ValidationError as exc:
            raise ModelsFileError(f"models file {path}: [models.{name}]: {exc}") from None
    return models
