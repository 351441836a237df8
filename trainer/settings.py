"""Trainer settings: `TLSERVE_*` environment variables (shared ones such as
TLSERVE_DATA_DIR, TLSERVE_STORE_URL and TLSERVE_HOLDOUT_PERCENT mean the same as for
the server) or a TOML file. Nothing is read at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tlserve.server.imaging import ResizePolicy
from tlserve.server.settings import DeploymentSettings

Pooling = Literal["avg", "max", "flatten"]


class TrainerSettings(DeploymentSettings):
    """Settings of `tlserve-trainer`."""

    model_config = SettingsConfigDict(
        env_prefix="TLSERVE_",
        use_attribute_docstrings=True,
        extra="ignore",
        env_parse_none_str="none",
        env_ignore_empty=True,
    )

    backbone: str = "MobileNetV2"
    """keras.applications model name (MobileNetV2, MobileNetV3Small, EfficientNetB0, ResNet50,
    InceptionV3, VGG16, ...), or a path to a Keras model file (.keras/.h5) of your own."""

    backbone_weights: str | None = "imagenet"
    """`imagenet` (Keras' download, cached in ~/.keras/models), a local weights file, or `none`
    (random weights)."""

    backbone_cut_layer: str = ""
    """For a model file or to cut a keras.applications model early: the layer whose output is used
    (e.g. InceptionV3's `mixed7`); empty: the model's last convolutional output."""

    backbone_pooling: Pooling = "avg"
    """How a spatial feature map becomes a vector: avg, max or flatten."""

    input_size: int = Field(default=224, ge=16, le=1024)
    """Square input size (pixels) for keras.applications backbones; a model file keeps its own."""

    resize: ResizePolicy = ResizePolicy.STRETCH
    """How images of other sizes are brought to the input size (the server uses the same)."""

    hidden_units: list[int] = Field(default_factory=lambda: [128])
    """Hidden Dense layers of the head, e.g. [256, 64]; [] for a linear (softmax) head."""

    normalize_features: bool = True
    """Scale each feature vector to unit length before the head (a cosine classifier): learns
    faster from few labels and whatever the backbone's activation scale."""

    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    """Dropout after each hidden layer."""

    learning_rate: float = Field(default=1e-3, gt=0.0)
    """Adam learning rate of head training."""

    epochs: int = Field(default=200, ge=1)
    """Most epochs of head training (early stopping usually ends it sooner)."""

    batch_size: int = Field(default=32, ge=1)
    """Training batch size."""

    patience: int = Field(default=15, ge=1)
    """Early stopping: epochs without validation improvement before stopping (best epoch kept)."""

    validation_percent: float = Field(default=15.0, ge=0.0, lt=50.0)
    """Share of the training split held out for early stopping."""

    seed: int = 1234
    """Seed for weights, shuffling and splits: the same data gives the same model."""

    fine_tune_layers: int = Field(default=0, ge=0)
    """After the head converges, unfreeze this many top backbone layers and train end to end
    (0: off). The result is a new backbone."""

    fine_tune_epochs: int = Field(default=5, ge=1)
    """Epochs of fine-tuning."""

    fine_tune_learning_rate: float = Field(default=1e-5, gt=0.0)
    """Learning rate of fine-tuning (~100x below the head's)."""

    fine_tune_augment: list[Literal["flip", "rotation", "zoom"]] = Field(
        default_factory=lambda: ["flip", "rotation", "zoom"]
    )
    """Augmentation while fine-tuning (drop `flip` where mirror images mean something else)."""

    min_accuracy: float = Field(default=0.0, ge=0.0, le=1.0)
    """Promotion gate: lowest holdout accuracy a new version may have (refused only when the
    holdout shows it is below, with `gate_confidence`)."""

    max_regression: float = Field(default=0.0, ge=0.0, le=1.0)
    """Promotion gate: the accuracy drop against the served version tolerated even when the
    holdout shows it with `gate_confidence` (a drop it cannot show never blocks)."""

    gate_confidence: float = Field(default=0.95, ge=0.5, lt=1.0)
    """Promotion gate: how sure the paired evidence must be that a candidate is worse (below
    `min_accuracy`, or behind the served version on the same samples) to refuse it."""

    min_samples_per_class: int = Field(default=1, ge=1)
    """Training samples a class needs to train; classes short of it wait, the rest train."""

    min_new_labels: int = Field(default=10, ge=1)
    """The loop trains when at least this many labels arrived since the last run."""

    poll_seconds: float = Field(default=2.0, gt=0.0)
    """How often the loop checks for new labels and training requests."""

    train_every_seconds: float | None = None
    """Also train on a timer, if any label is new (none: only on labels and requests)."""

    rollout: Literal["direct", "shadow", "canary"] = "direct"
    """How a version that passed the gate starts serving: `direct` (at once), or as the
    challenger of an experiment against the served version, judged by live labels sent by
    prediction id: `shadow` (it scores `rollout_share` of requests; the served version
    answers) or `canary` (it answers `rollout_share` of callers). A version on a new
    (fine-tuned) backbone is served directly."""

    rollout_share: float = Field(default=1.0, gt=0.0, le=1.0)
    """Shadow: the share of requests the challenger scores; canary: the share of callers it
    answers (below 1; 0.1 is a common start)."""

    keep_versions: int = Field(default=10, ge=2)
    """Registry retention: versions kept (CURRENT and the version it replaced always are)."""

    feature_batch_size: int = Field(default=64, ge=1)
    """Images per batch when computing features."""

    metrics_port: int | None = Field(default=9465, ge=0, le=65535)
    """Prometheus /metrics port of the trainer; `none` disables it."""

    metrics_host: str = "127.0.0.1"
    """Address the trainer's /metrics endpoint binds to (0.0.0.0 in a pod, for Prometheus)."""

    train_principals: str = ""
    """Train only on labels from these principals (comma-separated, e.g.
    `token:labeling-app,cert:alice`); empty: every principal."""

    exclude_principals: str = ""
    """Never train on labels from these principals (comma-separated)."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of the trainer process."""

    models_file: Path | None = None
    """TOML file of named models to train beside the default model, one `[models.<name>]`
    table each, whose keys override these settings for that model (trainer/models_file.py)."""

    def folders_to_write(self) -> list[tuple[Path, str]]:
        """The store's and cache's folders, and the trainer's own: run records under the data
        folder, and the registry it publishes to when that is a folder."""
        folders = [*super().folders_to_write(), (self.data_dir, "TLSERVE_DATA_DIR")]
        if not self.registry_url:
            setting = "TLSERVE_REGISTRY_DIR" if self.registry_dir else "TLSERVE_DATA_DIR"
            folders.append((self.registry_path, setting))
        return folders
