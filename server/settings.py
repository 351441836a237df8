"""Server settings: environment variables with the `TLSERVE_` prefix, or a TOML file.

Nothing is read at import time; `ServerSettings.load()` builds an instance when asked.
Every field's docstring is its documentation (the README's reference is generated
from these classes).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, Self

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

if TYPE_CHECKING:
    from tlserve.server.experiments import ExperimentLimits
    from tlserve.server.monitoring.live import MonitoringSettings
    from tlserve.server.registry import Registry

ExecutionProvider = Literal["auto", "cpu", "cuda", "tensorrt"]
NewClassPolicy = Literal["open", "quarantine", "closed"]
RoleName = Literal["none", "predict", "label", "admin"]


class FileSettings(BaseSettings):
    """Settings readable from a TOML file too (ranked below the environment)."""

    @classmethod
    def load(cls, toml_file: Path | None = None, **overrides: object) -> Self:
        """Settings from (lowest first) defaults, a TOML file, the environment, overrides."""
        if toml_file is None:
            return cls(**overrides)  # type: ignore[arg-type]
        if not toml_file.is_file():
            raise FileNotFoundError(f"settings file {toml_file} does not exist")
        config = SettingsConfigDict(**{**cls.model_config, "toml_file": toml_file})
        with_file = type(cls.__name__, (cls,), {"model_config": config, "__doc__": cls.__doc__})
        return with_file(**overrides)  # type: ignore[no-any-return]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # A TOML file (when `load` was given one) ranks below the environment.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


class DeploymentSettings(FileSettings):
    """Where the data lives: the same TLSERVE_* variables for the server and the trainer."""

    model_config = SettingsConfigDict(
        env_prefix="TLSERVE_",
        use_attribute_docstrings=True,
        env_parse_none_str="none",
        # An empty variable means the default, as the README's table shows it.
        env_ignore_empty=True,
    )

    data_dir: Path = Path("./tlserve-data")
    """Root of the embedded deployment: the registry and the SQLite store live below it."""

    registry_dir: Path | None = None
    """Model registry folder; defaults to `<data_dir>/registry`. Unused with `registry_url`."""

    registry_url: str = ""
    """`s3://bucket[/prefix]`: the registry on S3-compatible object storage (the default for
    more than one replica; needs `tlserve[s3]`); empty for the folder. Credentials and
    region come from the standard AWS chain (env, config files, IRSA, instance role)."""

    s3_endpoint_url: str = ""
    """Endpoint of an S3-compatible service (MinIO, GCS's XML API); empty for AWS itself or
    whatever `AWS_ENDPOINT_URL` names."""

    registry_cache_dir: Path | None = None
    """Local cache of model files read from object storage, by sha256; defaults to
    `<data_dir>/registry-cache`."""

    store_url: str = ""
    """Feedback store: empty for SQLite at `<data_dir>/feedback.sqlite3`, `sqlite:///PATH`, or a
    `postgresql://` URL (needed when several replicas or pods share the store)."""

    holdout_percent: float = Field(default=20.0, ge=0.0, le=90.0)
    """Share of samples in the stable holdout split (by content hash), for counts and evaluation."""

    holdout_min_class_samples: int = Field(default=10, ge=1)
    """A class holds samples out for evaluation only once it has this many labels; a smaller
    class trains on all of them (reported as not evaluated), so no class is ever starved."""

    new_class_quorum: int = Field(default=5, ge=1)
    """Distinct principals (labelers) a new label needs before it joins training under
    `quarantine`: one credential cannot admit a class alone, however many images it sends."""

    @property
    def registry_path(self) -> Path:
        return self.registry_dir if self.registry_dir is not None else self.data_dir / "registry"

    def open_registry(self) -> Registry:
        """The registry these settings name: object storage or the folder."""
        # Imported here: the health probe reads these settings and must stay light.
        from tlserve.server.registry import Registry  # noqa: PLC0415

        if not self.registry_url:
            return Registry.local(self.registry_path)
        from tlserve.server.registry.s3 import S3Storage  # noqa: PLC0415 (tlserve[s3])

        cache = self.registry_cache_dir or self.data_dir / "registry-cache"
        return Registry(
            S3Storage(self.registry_url, cache_dir=cache, endpoint_url=self.s3_endpoint_url or None)
        )

    def folders_to_write(self) -> list[tuple[Path, str]]:
        """The local folders this process writes, each with the setting that places it."""
        folders = []
        if not self.store_url:
            folders.append((self.data_dir, "TLSERVE_DATA_DIR"))
        elif self.store_url.startswith("sqlite:///"):
            folders.append(
                (Path(self.store_url.removeprefix("sqlite:///")).parent, "TLSERVE_STORE_URL")
            )
        if self.registry_url:
            if self.registry_cache_dir is None:
                folders.append((self.data_dir / "registry-cache", "TLSERVE_DATA_DIR"))
            else:
                folders.append((self.registry_cache_dir, "TLSERVE_REGISTRY_CACHE_DIR"))
        return folders

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{(self.data_dir / 'feedback.sqlite3').resolve()}"


class ServerSettings(DeploymentSettings):
    """Settings of `tlserve-server`."""

    model_config = SettingsConfigDict(
        env_prefix="TLSERVE_",
        use_attribute_docstrings=True,
        extra="forbid",
        env_parse_none_str="none",
        env_ignore_empty=True,
    )

    new_class_policy: NewClassPolicy | Literal["auto"] = "auto"
    """Labels the served model does not know yet: `open` (approved as they arrive),
    `quarantine` (they train once `new_class_quorum` distinct principals gave them or an
    admin approves them) or `closed` (refused unless an admin approved them); `auto`:
    `open` on a loopback-only server without credentials, `quarantine` otherwise."""

    keep_predictions: bool = True
    """Keep recent predictions (scores, features, image) for feedback by id and SuggestLabels."""

    keep_max_per_second: float = Field(default=50.0, ge=0.0)
    """Most predictions kept per second (0: all); the rest are answered but not kept."""

    prediction_retention_count: int = Field(default=10_000, ge=1)
    """Most kept predictions; older ones are pruned."""

    prediction_retention_seconds: float = Field(default=24 * 3600.0, gt=0.0)
    """Longest a prediction is kept; feedback naming an older one must resend the image."""

    keep_max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    """Most bytes of kept predictions (pixels, scores, features); the oldest go first."""

    max_suggestions: int = Field(default=100, ge=1, le=1000)
    """Most suggestions one SuggestLabels call returns (fewer when their images would not
    fit in one reply of `max_message_bytes`)."""

    max_stream_items: int = Field(default=10_000, ge=1)
    """Most items one StreamFeedback call reads; the rest are reported as not read."""

    max_feedback_image_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest encoded image accepted as feedback, in bytes."""

    feedback_image_side: int = Field(default=320, ge=32)
    """Feedback images are stored downscaled to just cover the served model's input size
    (the trainer needs no more); before any model is served, to this many pixels a side."""

    host: str = "127.0.0.1"
    """Address the gRPC server binds to. Any address but loopback needs TLS and credentials
    (or `insecure`)."""

    http_host: str | None = None
    """Address the HTTP API binds to; `none`: the same as `host`."""

    metrics_host: str | None = None
    """Address the Prometheus endpoint binds to; `none`: the same as `host`."""

    insecure: bool = False
    """Allow serving on a non-loopback address without TLS or credentials: only for a
    trusted network, and logged as a warning at start."""

    tls_cert_file: Path | None = None
    """PEM server certificate chain for gRPC and HTTP (TLS is on when this and the key are
    set); re-read when it changes."""

    tls_key_file: Path | None = None
    """PEM private key of `tls_cert_file`."""

    tls_client_ca_file: Path | None = None
    """PEM CA bundle that client certificates must chain to (mutual TLS)."""

    tls_client_auth: Literal["require", "optional"] = "require"
    """With a client CA: `require` a client certificate, or verify one when presented
    (`optional`; HTTP only, gRPC then asks for none)."""

    probe_cert_file: Path | None = None
    """PEM client certificate `tlserve-server probe` presents to a server that requires
    one (its key in `probe_key_file`); unset, it presents the server's own certificate,
    which the server accepts only if it chains to the client CA and allows client use."""

    probe_key_file: Path | None = None
    """PEM private key of `probe_cert_file`."""

    credentials_check_seconds: float = Field(default=10.0, ge=0.0)
    """How often the TLS files and the tokens file are checked for changes."""

    predict_tokens: str = ""
    """Comma-separated bearer tokens with the `predict` role (each at least 16 characters,
    or `sha256:<hex>` of one)."""

    label_tokens: str = ""
    """Comma-separated bearer tokens with the `label` role (feedback, suggestions, labels)."""

    admin_tokens: str = ""
    """Comma-separated bearer tokens with the `admin` role (rollback, training, approving
    labels); admin calls are refused while none exists."""

    tokens_file: Path | None = None
    """File of `<role> <token or sha256:hex> [name]` lines; re-read when it changes."""

    client_cert_roles: str = ""
    """Roles of mutual-TLS clients by certificate name (CN or SAN), as `name=role,...`."""

    client_cert_default_role: RoleName = "predict"
    """Role of a verified client certificate not named in `client_cert_roles`."""

    anonymous_role: RoleName | Literal["auto"] = "auto"
    """Role of callers without credentials; `auto`: `label` when no credential is
    configured at all (a loopback or insecure server), else `none`."""

    predict_rate: float = Field(default=0.0, ge=0.0)
    """Images per second each principal may send to Predict and ModelInfer (0: no limit)."""

    predict_burst: float = Field(default=1000.0, ge=1.0)
    """Images a principal may send at once before `predict_rate` applies."""

    feedback_rate: float = Field(default=50.0, ge=0.0)
    """Feedback items per second each principal may submit (0: no limit)."""

    feedback_burst: float = Field(default=1000.0, ge=1.0)
    """Feedback items a principal may submit at once before `feedback_rate` applies."""

    training_rate: float = Field(default=1 / 60, ge=0.0)
    """TriggerTraining calls per second each principal may make (0: no limit)."""

    training_burst: float = Field(default=3.0, ge=1.0)
    """TriggerTraining calls a principal may make at once."""

    suggest_rate: float = Field(default=2.0, ge=0.0)
    """SuggestLabels calls per second each principal may make (0: no limit); each scores
    the model's kept predictions and encodes images."""

    suggest_burst: float = Field(default=10.0, ge=1.0)
    """SuggestLabels calls a principal may make at once."""

    reflection: bool = True
    """Serve gRPC server reflection (lets grpcurl list the services)."""

    port: int = Field(default=50051, ge=0, le=65535)
    """gRPC port; 0 picks a free one (the chosen port is logged)."""

    http_port: int | None = Field(default=8000, ge=0, le=65535)
    """HTTP port of the REST API (Open Inference Protocol REST + tlserve's /v1 calls);
    `none` disables it, 0 picks a free one."""

    metrics_port: int | None = Field(default=9464, ge=0, le=65535)
    """Prometheus /metrics HTTP port; `none` disables the endpoint, 0 picks a free one."""

    model_name: str = "tlserve"
    """The default model's name: requests that name no model, or this one, go to the
    registry's CURRENT; other names are the registry's named models."""

    max_models: int = Field(default=64, ge=1)
    """Most models (the default one included) this server loads; further models in the
    registry's index are refused by name, with this setting in the error."""

    execution_provider: ExecutionProvider = "auto"
    """ONNX Runtime provider: auto (CUDA if a GPU is usable, else CPU), cpu, cuda or tensorrt."""

    intra_op_threads: int = Field(default=0, ge=0)
    """ONNX Runtime intra-op threads per session; 0 lets ONNX Runtime use every core."""

    max_batch_size: int = Field(default=8, ge=1, le=4096)
    """Most images per inference batch; on CPUs small batches (4-8) are fastest, GPUs want 32+."""

    max_queue_delay_ms: float = Field(default=2.0, ge=0.0, le=10_000.0)
    """Longest time the first image of a batch waits for more to arrive."""

    max_queue_size: int = Field(default=1024, ge=1)
    """Most images waiting for inference; beyond it Predict fails at once (RESOURCE_EXHAUSTED)."""

    max_images_per_request: int = Field(default=256, ge=1)
    """Most images in one Predict or ModelInfer request."""

    max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest gRPC message accepted or sent, and largest HTTP request body (all its
    multipart parts together, after Content-Encoding is undone), in bytes."""

    max_body_seconds: float = Field(default=60.0, gt=0.0)
    """Longest time an HTTP request body may take to arrive (408 after it): a slow sender
    holds a connection and a buffer for as long as the server waits."""

    max_json_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Largest JSON part of an HTTP inference request: JSON tensor elements cost far more
    to parse than their bytes suggest, and Python's JSON parser holds the interpreter for
    the whole parse (about 11 ms per MB), so every other request waits; larger tensors go
    as binary data."""

    max_image_pixels: int = Field(default=40_000_000, ge=1)
    """Largest decoded image (width x height) accepted; larger ones are refused before decoding."""

    max_image_side: int = Field(default=16_384, ge=1)
    """Largest width or height of an image accepted, in pixels."""

    decode_threads: int = Field(default=2, ge=1)
    """Threads decoding and resizing images (Pillow releases the GIL while decoding)."""

    default_top_k: int = Field(default=5, ge=1)
    """Labels returned per image when a request leaves top_k at 0 (capped at the label count)."""

    registry_poll_seconds: float = Field(default=2.0, gt=0.0)
    """How often the registry's CURRENT pointer is checked for a new version."""

    refused_retry_seconds: float = Field(default=300.0, ge=0.0)
    """How long a version that failed verification is left alone before it is tried again."""

    estimate_window: int = Field(default=1000, ge=1)
    """Answers per served version whose calibrated confidence makes its estimated accuracy
    (the mean over the newest this many)."""

    drift_window: int = Field(default=200, ge=20)
    """Live predictions per served version tested against its training features for drift."""

    drift_test_every: int = Field(default=25, ge=1)
    """The drift test runs again after this many new predictions."""

    drift_alpha: float = Field(default=0.01, gt=0.0, lt=1.0)
    """A window whose drift p value is below this raises the drift alarm: the share of
    windows of in-distribution traffic that alarm."""

    experiment_max_labels: int = Field(default=5000, ge=10)
    """An experiment not decided after this many labeled pairs is abandoned (the champion
    stays). A challenger 3 points better than a 90% champion needs about 1,300 (median)."""

    experiment_max_hours: float = Field(default=168.0, gt=0.0)
    """An experiment not decided within this many hours is abandoned."""

    experiment_alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    """Experiments promote or abandon at confidence 1 - alpha: a challenger no better than
    the champion is promoted in at most alpha/2 of experiments, however often it is judged."""

    drain_seconds: float = Field(default=10.0, ge=0.0)
    """On shutdown: how long in-flight requests may take to finish."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of the server process."""

    def experiment_limits(self) -> ExperimentLimits:
        from tlserve.server.experiments import ExperimentLimits  # noqa: PLC0415 (the probe stays light)

        return ExperimentLimits(
            max_labels=self.experiment_max_labels,
            max_hours=self.experiment_max_hours,
            alpha=self.experiment_alpha,
        )

    def monitoring(self) -> MonitoringSettings:
        # Imported here: the probe reads these settings and must not load numpy.
        from tlserve.server.monitoring.live import MonitoringSettings  # noqa: PLC0415

        return MonitoringSettings(
            estimate_window=self.estimate_window,
            drift_window=self.drift_window,
            drift_test_every=self.drift_test_every,
            drift_alpha=self.drift_alpha,
        )
