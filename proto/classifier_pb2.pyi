from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    UINT8: _ClassVar[DataType]
    FLOAT32: _ClassVar[DataType]

class SuggestStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUGGEST_STRATEGY_UNSPECIFIED: _ClassVar[SuggestStrategy]
    LEAST_CONFIDENCE: _ClassVar[SuggestStrategy]
    MARGIN: _ClassVar[SuggestStrategy]
    ENTROPY: _ClassVar[SuggestStrategy]
    BALANCED: _ClassVar[SuggestStrategy]
DATA_TYPE_UNSPECIFIED: DataType
UINT8: DataType
FLOAT32: DataType
SUGGEST_STRATEGY_UNSPECIFIED: SuggestStrategy
LEAST_CONFIDENCE: SuggestStrategy
MARGIN: SuggestStrategy
ENTROPY: SuggestStrategy
BALANCED: SuggestStrategy

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("encoded", "tensor")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    tensor: Tensor
    def __init__(self, encoded: _Optional[bytes] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("images", "top_k", "do_not_keep", "model", "routing_key")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    DO_NOT_KEEP_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROUTING_KEY_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    top_k: int
    do_not_keep: bool
    model: str
    routing_key: str
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., top_k: _Optional[int] = ..., do_not_keep: bool = ..., model: _Optional[str] = ..., routing_key: _Optional[str] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("prediction_id", "top")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    top: _containers.RepeatedCompositeFieldContainer[LabelScore]
    def __init__(self, prediction_id: _Optional[str] = ..., top: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("predictions", "model_version", "label_count")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    model_version: str
    label_count: int
    def __init__(self, predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., model_version: _Optional[str] = ..., label_count: _Optional[int] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("version", "model")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    version: str
    model: str
    def __init__(self, version: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("version", "labels", "backbone_id", "input_height", "input_width", "resize", "created_at", "parent_version", "serving", "execution_providers", "card_json", "live_accuracy", "live_feedback_count", "error", "training", "model", "monitoring", "experiment")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PARENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    CARD_JSON_FIELD_NUMBER: _ClassVar[int]
    LIVE_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LIVE_FEEDBACK_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MONITORING_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    version: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    backbone_id: str
    input_height: int
    input_width: int
    resize: str
    created_at: str
    parent_version: str
    serving: bool
    execution_providers: _containers.RepeatedScalarFieldContainer[str]
    card_json: str
    live_accuracy: float
    live_feedback_count: int
    error: str
    training: TrainingStatus
    model: str
    monitoring: LiveMonitoring
    experiment: Experiment
    def __init__(self, version: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., backbone_id: _Optional[str] = ..., input_height: _Optional[int] = ..., input_width: _Optional[int] = ..., resize: _Optional[str] = ..., created_at: _Optional[str] = ..., parent_version: _Optional[str] = ..., serving: bool = ..., execution_providers: _Optional[_Iterable[str]] = ..., card_json: _Optional[str] = ..., live_accuracy: _Optional[float] = ..., live_feedback_count: _Optional[int] = ..., error: _Optional[str] = ..., training: _Optional[_Union[TrainingStatus, _Mapping]] = ..., model: _Optional[str] = ..., monitoring: _Optional[_Union[LiveMonitoring, _Mapping]] = ..., experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class LiveMonitoring(_message.Message):
    __slots__ = ("estimated_accuracy", "estimated_from", "temperature", "drift_state", "drift_p_value", "drift_statistic", "drift_window", "drift_tested_windows", "drift_alarmed_windows")
    ESTIMATED_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FROM_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    DRIFT_STATE_FIELD_NUMBER: _ClassVar[int]
    DRIFT_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    DRIFT_STATISTIC_FIELD_NUMBER: _ClassVar[int]
    DRIFT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    DRIFT_TESTED_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    DRIFT_ALARMED_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    estimated_accuracy: float
    estimated_from: int
    temperature: float
    drift_state: str
    drift_p_value: float
    drift_statistic: float
    drift_window: int
    drift_tested_windows: int
    drift_alarmed_windows: int
    def __init__(self, estimated_accuracy: _Optional[float] = ..., estimated_from: _Optional[int] = ..., temperature: _Optional[float] = ..., drift_state: _Optional[str] = ..., drift_p_value: _Optional[float] = ..., drift_statistic: _Optional[float] = ..., drift_window: _Optional[int] = ..., drift_tested_windows: _Optional[int] = ..., drift_alarmed_windows: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "current_version")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    current_version: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., current_version: _Optional[str] = ...) -> None: ...

class ListServedModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServedModel(_message.Message):
    __slots__ = ("name", "version", "is_default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    is_default: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., is_default: bool = ...) -> None: ...

class ListServedModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ServedModel]
    def __init__(self, models: _Optional[_Iterable[_Union[ServedModel, _Mapping]]] = ...) -> None: ...

class SubmitFeedbackRequest(_message.Message):
    __slots__ = ("prediction_id", "image", "label", "idempotency_key", "source", "model")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    image: Image
    label: str
    idempotency_key: str
    source: str
    model: str
    def __init__(self, prediction_id: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., label: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., source: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class SubmitFeedbackResponse(_message.Message):
    __slots__ = ("sample_id", "label", "duplicate", "previous_label")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_LABEL_FIELD_NUMBER: _ClassVar[int]
    sample_id: str
    label: str
    duplicate: bool
    previous_label: str
    def __init__(self, sample_id: _Optional[str] = ..., label: _Optional[str] = ..., duplicate: bool = ..., previous_label: _Optional[str] = ...) -> None: ...

class FeedbackItemResult(_message.Message):
    __slots__ = ("index", "accepted", "sample_id", "error_code", "error", "duplicate")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    index: int
    accepted: bool
    sample_id: str
    error_code: str
    error: str
    duplicate: bool
    def __init__(self, index: _Optional[int] = ..., accepted: bool = ..., sample_id: _Optional[str] = ..., error_code: _Optional[str] = ..., error: _Optional[str] = ..., duplicate: bool = ...) -> None: ...

class StreamFeedbackResponse(_message.Message):
    __slots__ = ("accepted", "rejected", "results")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    rejected: int
    results: _containers.RepeatedCompositeFieldContainer[FeedbackItemResult]
    def __init__(self, accepted: _Optional[int] = ..., rejected: _Optional[int] = ..., results: _Optional[_Iterable[_Union[FeedbackItemResult, _Mapping]]] = ...) -> None: ...

class ListLabelsRequest(_message.Message):
    __slots__ = ("added_after", "model")
    ADDED_AFTER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    added_after: float
    model: str
    def __init__(self, added_after: _Optional[float] = ..., model: _Optional[str] = ...) -> None: ...

class LabelCount(_message.Message):
    __slots__ = ("label", "samples", "holdout", "status", "images_needed", "labelers_needed")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_NEEDED_FIELD_NUMBER: _ClassVar[int]
    LABELERS_NEEDED_FIELD_NUMBER: _ClassVar[int]
    label: str
    samples: int
    holdout: int
    status: str
    images_needed: int
    labelers_needed: int
    def __init__(self, label: _Optional[str] = ..., samples: _Optional[int] = ..., holdout: _Optional[int] = ..., status: _Optional[str] = ..., images_needed: _Optional[int] = ..., labelers_needed: _Optional[int] = ...) -> None: ...

class ListLabelsResponse(_message.Message):
    __slots__ = ("labels", "total_samples", "labels_added", "conflicting_samples")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LABELS_ADDED_FIELD_NUMBER: _ClassVar[int]
    CONFLICTING_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[LabelCount]
    total_samples: int
    labels_added: int
    conflicting_samples: int
    def __init__(self, labels: _Optional[_Iterable[_Union[LabelCount, _Mapping]]] = ..., total_samples: _Optional[int] = ..., labels_added: _Optional[int] = ..., conflicting_samples: _Optional[int] = ...) -> None: ...

class RetractLabelRequest(_message.Message):
    __slots__ = ("sample_id", "model")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    sample_id: str
    model: str
    def __init__(self, sample_id: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class RetractLabelResponse(_message.Message):
    __slots__ = ("sample_id", "retracted_label")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    RETRACTED_LABEL_FIELD_NUMBER: _ClassVar[int]
    sample_id: str
    retracted_label: str
    def __init__(self, sample_id: _Optional[str] = ..., retracted_label: _Optional[str] = ...) -> None: ...

class SuggestLabelsRequest(_message.Message):
    __slots__ = ("count", "strategy", "omit_images", "model")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    OMIT_IMAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    count: int
    strategy: SuggestStrategy
    omit_images: bool
    model: str
    def __init__(self, count: _Optional[int] = ..., strategy: _Optional[_Union[SuggestStrategy, str]] = ..., omit_images: bool = ..., model: _Optional[str] = ...) -> None: ...

class Suggestion(_message.Message):
    __slots__ = ("prediction_id", "uncertainty", "top", "model_version", "image_png")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_PNG_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    uncertainty: float
    top: _containers.RepeatedCompositeFieldContainer[LabelScore]
    model_version: str
    image_png: bytes
    def __init__(self, prediction_id: _Optional[str] = ..., uncertainty: _Optional[float] = ..., top: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., model_version: _Optional[str] = ..., image_png: _Optional[bytes] = ...) -> None: ...

class SuggestLabelsResponse(_message.Message):
    __slots__ = ("suggestions",)
    SUGGESTIONS_FIELD_NUMBER: _ClassVar[int]
    suggestions: _containers.RepeatedCompositeFieldContainer[Suggestion]
    def __init__(self, suggestions: _Optional[_Iterable[_Union[Suggestion, _Mapping]]] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("version", "model")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    version: str
    model: str
    def __init__(self, version: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("previous_version", "current_version")
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    previous_version: str
    current_version: str
    def __init__(self, previous_version: _Optional[str] = ..., current_version: _Optional[str] = ...) -> None: ...

class StartExperimentRequest(_message.Message):
    __slots__ = ("model", "challenger_version", "rollout", "share", "max_labels", "max_hours")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    MAX_LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_HOURS_FIELD_NUMBER: _ClassVar[int]
    model: str
    challenger_version: str
    rollout: str
    share: float
    max_labels: int
    max_hours: float
    def __init__(self, model: _Optional[str] = ..., challenger_version: _Optional[str] = ..., rollout: _Optional[str] = ..., share: _Optional[float] = ..., max_labels: _Optional[int] = ..., max_hours: _Optional[float] = ...) -> None: ...

class EndExperimentRequest(_message.Message):
    __slots__ = ("model", "outcome", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    outcome: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., outcome: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ExperimentEvidence(_message.Message):
    __slots__ = ("decision", "reason", "pairs", "wins", "losses", "champion_correct", "challenger_correct", "p_better", "p_worse", "win_share_low", "win_share_high")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    WINS_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_CORRECT_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_CORRECT_FIELD_NUMBER: _ClassVar[int]
    P_BETTER_FIELD_NUMBER: _ClassVar[int]
    P_WORSE_FIELD_NUMBER: _ClassVar[int]
    WIN_SHARE_LOW_FIELD_NUMBER: _ClassVar[int]
    WIN_SHARE_HIGH_FIELD_NUMBER: _ClassVar[int]
    decision: str
    reason: str
    pairs: int
    wins: int
    losses: int
    champion_correct: int
    challenger_correct: int
    p_better: float
    p_worse: float
    win_share_low: float
    win_share_high: float
    def __init__(self, decision: _Optional[str] = ..., reason: _Optional[str] = ..., pairs: _Optional[int] = ..., wins: _Optional[int] = ..., losses: _Optional[int] = ..., champion_correct: _Optional[int] = ..., challenger_correct: _Optional[int] = ..., p_better: _Optional[float] = ..., p_worse: _Optional[float] = ..., win_share_low: _Optional[float] = ..., win_share_high: _Optional[float] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("champion_version", "challenger_version", "rollout", "share", "state", "reason", "started_at", "started_by", "ended_at", "ended_by", "deadline", "max_labels", "alpha", "evidence")
    CHAMPION_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_BY_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_BY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    MAX_LABELS_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    champion_version: str
    challenger_version: str
    rollout: str
    share: float
    state: str
    reason: str
    started_at: float
    started_by: str
    ended_at: float
    ended_by: str
    deadline: float
    max_labels: int
    alpha: float
    evidence: ExperimentEvidence
    def __init__(self, champion_version: _Optional[str] = ..., challenger_version: _Optional[str] = ..., rollout: _Optional[str] = ..., share: _Optional[float] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., started_at: _Optional[float] = ..., started_by: _Optional[str] = ..., ended_at: _Optional[float] = ..., ended_by: _Optional[str] = ..., deadline: _Optional[float] = ..., max_labels: _Optional[int] = ..., alpha: _Optional[float] = ..., evidence: _Optional[_Union[ExperimentEvidence, _Mapping]] = ...) -> None: ...

class TriggerTrainingRequest(_message.Message):
    __slots__ = ("reason", "model")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    reason: str
    model: str
    def __init__(self, reason: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class TriggerTrainingResponse(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    def __init__(self, request_id: _Optional[int] = ...) -> None: ...

class ApproveLabelsRequest(_message.Message):
    __slots__ = ("labels", "model")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    model: str
    def __init__(self, labels: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ...) -> None: ...

class ApproveLabelsResponse(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, labels: _Optional[_Iterable[str]] = ...) -> None: ...

class GetTrainingStatusRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class TrainingRun(_message.Message):
    __slots__ = ("run_id", "result", "reasons", "version", "finished_at", "labels")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    result: str
    reasons: _containers.RepeatedScalarFieldContainer[str]
    version: str
    finished_at: float
    labels: int
    def __init__(self, run_id: _Optional[str] = ..., result: _Optional[str] = ..., reasons: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ..., finished_at: _Optional[float] = ..., labels: _Optional[int] = ...) -> None: ...

class TrainingStatus(_message.Message):
    __slots__ = ("state", "detail", "updated_at", "stale", "last_run", "waiting_classes", "new_labels", "next_trigger")
    class WaitingClassesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_FIELD_NUMBER: _ClassVar[int]
    WAITING_CLASSES_FIELD_NUMBER: _ClassVar[int]
    NEW_LABELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_TRIGGER_FIELD_NUMBER: _ClassVar[int]
    state: str
    detail: str
    updated_at: float
    stale: bool
    last_run: TrainingRun
    waiting_classes: _containers.ScalarMap[str, str]
    new_labels: int
    next_trigger: str
    def __init__(self, state: _Optional[str] = ..., detail: _Optional[str] = ..., updated_at: _Optional[float] = ..., stale: bool = ..., last_run: _Optional[_Union[TrainingRun, _Mapping]] = ..., waiting_classes: _Optional[_Mapping[str, str]] = ..., new_labels: _Optional[int] = ..., next_trigger: _Optional[str] = ...) -> None: ...
