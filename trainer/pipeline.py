"""One training run: snapshot the labels, cache features, train the head, export it,
evaluate it beside the served version on the same holdout, gate, publish, record.

A run that fails or is gated out leaves the registry as it was; every run leaves a
record (`<data_dir>/trainer/runs/<run id>/record.json`, plus TensorBoard logs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import keras
import numpy as np
import onnxruntime as ort

from tlserve.server.classes import ClassPolicy, NewClassPolicy
from tlserve.server.errors import TlserveError
from tlserve.server.experiments import propose_challenger
from tlserve.server.fsutil import atomic_write_bytes, exclusive_lock
from tlserve.server.imaging import ImageLimits, decode_image
from tlserve.server.monitoring.calibration import Calibration, fit_temperature
from tlserve.server.monitoring.drift import REFERENCE_FILE, DriftReference
from tlserve.server.registry import BackboneManifest, Registry, new_version_id
from tlserve.server.registry.experiment import Rollout
from tlserve.server.store.base import FeedbackStore, LabelRecord
from tlserve.server.store.labels import holdout_share, in_holdout
from tlserve.trainer.backbones import Backbone, build_backbone, features_function
from tlserve.trainer.errors import NotEnoughData, TrainerError
from tlserve.trainer.evaluation import GateDecision, PromotionGate, evaluate
from tlserve.trainer.finetune import fine_tune
from tlserve.trainer.head import HeadResult, head_function, train_head
from tlserve.trainer.onnx_export import export_function
from tlserve.trainer.plots import confusion_matrix, training_curves
from tlserve.trainer.settings import TrainerSettings

log = logging.getLogger(__name__)


class RunResult(StrEnum):
    RUNNING = "running"
    PROMOTED = "promoted"
    # Passed the gate and published as the challenger of an experiment (rollout shadow or
    # canary): live labels decide whether it serves.
    CHALLENGER = "challenger"
    REJECTED = "rejected"  # by the promotion gate
    SKIPPED = "skipped"  # not enough data
    FAILED = "failed"


# Runs that published a version.
PUBLISHED = (RunResult.PROMOTED, RunResult.CHALLENGER)


@dataclass
class RunRecord:
    run_id: str
    reason: str
    result: RunResult = RunResult.RUNNING
    version: str | None = None
    served_before: str | None = None
    reasons: list[str] = field(default_factory=list)
    dataset: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    label_seq: int = 0
    newest_label_at: float = 0.0
    published_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The labeled set one run trains and evaluates on."""

    labels: list[str]
    train: list[LabelRecord]
    holdout: list[LabelRecord]
    train_counts: dict[str, int]
    y_train: np.ndarray


@dataclass(frozen=True, slots=True)
class _ServedOnHoldout:
    """The served version judged on this run's holdout."""

    metrics: dict[str, Any]
    right: np.ndarray  # per holdout sample: whether it answered the label
    borrowed: frozenset[str]  # holdout samples it trained on


def split_holdout(
    records: list[LabelRecord], holdout_percent: float, min_class_samples: int
) -> tuple[list[LabelRecord], list[LabelRecord], list[LabelRecord]]:
    """(train, holdout, borrowed): the stable hash split, where each class holds out only
    what it can spare (`holdout_share`); `borrowed` are hash-picked holdout samples that
    train because their class could not spare them (also in `train`)."""
    hashed: dict[str, list[LabelRecord]] = defaultdict(list)
    sizes = Counter(r.label for r in records)
    for r in records:
        if in_holdout(r.sample_id, holdout_percent):
            hashed[r.label].append(r)
    held: set[str] = set()
    borrowed: list[LabelRecord] = []
    for label, members in hashed.items():
        share = holdout_share(sizes[label], len(members), min_class_samples)
        ordered = sorted(members, key=lambda r: r.sample_id)
        held.update(r.sample_id for r in ordered[:share])
        borrowed += ordered[share:]
    train = [r for r in records if r.sample_id not in held]
    holdout = [r for r in records if r.sample_id in held]
    return train, holdout, borrowed


class Trainer:
    def __init__(self, settings: TrainerSettings, store: FeedbackStore, registry: Registry) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.state_dir = settings.data_dir / "trainer"
        self.limits = ImageLimits()
        self.gate = PromotionGate(
            settings.min_accuracy, settings.max_regression, settings.gate_confidence
        )
        # The servers apply their own policy as labels arrive (approving them under
        # `open`, refusing them under `closed`); what is left for training is quarantine.
        self.class_policy = ClassPolicy(NewClassPolicy.QUARANTINE, settings.new_class_quorum)

    def _served_labels(self, version: str | None) -> tuple[str, ...]:
        if version is None:
            return ()
        try:
            return self.registry.model_manifest(version).labels
        except TlserveError:
            return ()  # an unreadable served version knows no labels

    # ---- backbone -----------------------------------------------------------------

    def backbone_key(self) -> str:
        s = self.settings
        parts: dict[str, Any] = {
            "backbone": s.backbone,
            "weights": s.backbone_weights,
            "cut": s.backbone_cut_layer,
            "pooling": s.backbone_pooling,
            "size": s.input_size,
            "resize": s.resize,
            "seed": s.seed,
        }
        for name in ("backbone", "backbone_weights"):
            path = Path(getattr(s, name) or "")
            if path.is_file():
                parts[f"{name}_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def ensure_backbone(self) -> BackboneManifest:
        """The configured backbone in the registry: exported once, then reused by id.

        Under a lock on the trainer's state: models on the same backbone settings start
        their runs at once, and the first exports it while the others wait for its id
        instead of each exporting it again (the same bytes, but minutes of work each for
        a large backbone)."""
        key = self.backbone_key()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.state_dir / "backbones.lock"):
            index_path = self.state_dir / "backbones.json"
            index = json.loads(index_path.read_text()) if index_path.is_file() else {}
            known = index.get(key)
            if known and self.registry.has_backbone(known):
                return self.registry.backbone_manifest(known)
            manifest = self._export_backbone(self.build_keras_backbone(), {"config_key": key})
            index[key] = manifest.id
            atomic_write_bytes(index_path, json.dumps(index, indent=2).encode())
        log.info("backbone %s exported (%d features)", manifest.id[:12], manifest.feature_dim)
        return manifest

    def build_keras_backbone(self) -> Backbone:
        """The configured backbone as a Keras model (seeded: the same config, the same weights)."""
        s = self.settings
        keras.utils.set_random_seed(s.seed)
        return build_backbone(
            s.backbone,
            weights=s.backbone_weights or "none",
            input_size=s.input_size,
            cut_layer=s.backbone_cut_layer,
            pooling=s.backbone_pooling,
        )

    def _export_backbone(self, backbone: Backbone, source: dict[str, Any]) -> BackboneManifest:
        sample = np.random.default_rng(0).integers(
            0, 256, (2, backbone.height, backbone.width, 3), dtype=np.uint8
        )
        onnx_bytes = export_function(
            features_function(backbone), input_name="images", output_name="features", sample=sample
        )
        return self.registry.publish_backbone(
            onnx_bytes,
            input_name="images",
            output_name="features",
            height=backbone.height,
            width=backbone.width,
            feature_dim=backbone.feature_dim,
            resize=self.settings.resize,
            source={**backbone.source, **source},
        )

    def pixels(self, backbone: BackboneManifest, sample_ids: list[str]) -> np.ndarray:
        """The samples as the backbone sees them: decoded and resized by the shared pipeline."""
        images = self.store.images(sample_ids)
        return np.stack(
            [decode_image(images[s], backbone.input_spec, self.limits) for s in sample_ids]
        )

    # ---- features -----------------------------------------------------------------

    def features(self, backbone: BackboneManifest, sample_ids: list[str]) -> np.ndarray:
        """Features of every sample, computing (and caching) only the missing ones."""
        cached = self.store.features(backbone.id, sample_ids)
        missing = [s for s in sample_ids if s not in cached]
        if missing:
            session = ort.InferenceSession(
                self.registry.read_backbone_onnx(backbone.id), providers=["CPUExecutionProvider"]
            )
            batch = self.settings.feature_batch_size
            for start in range(0, len(missing), batch):
                chunk = missing[start : start + batch]
                pixels = self.pixels(backbone, chunk)
                (vectors,) = session.run([backbone.output_name], {backbone.input_name: pixels})
                computed = dict(zip(chunk, vectors, strict=True))
                self.store.put_features(backbone.id, computed)
                cached.update(computed)
                _progress("features", min(start + batch, len(missing)), len(missing))
        return np.stack([cached[s] for s in sample_ids]).astype(np.float32)

    # ---- a run --------------------------------------------------------------------

    def run_once(self, reason: str = "manual") -> RunRecord:
        run_id = new_version_id()
        record = RunRecord(run_id=run_id, reason=reason, served_before=self.registry.current())
        run_dir = self.state_dir / "runs" / run_id
        try:
            self._run(record, run_dir)
        except NotEnoughData as exc:
            record.result, record.reasons = RunResult.SKIPPED, [str(exc)]
        except TrainerError as exc:
            record.result, record.reasons = RunResult.FAILED, [str(exc)]
            log.error("training run %s failed: %s", run_id, exc)
        except Exception as exc:
            record.result, record.reasons = RunResult.FAILED, [f"{type(exc).__name__}: {exc}"]
            log.exception("training run %s failed", run_id)
        finally:
            atomic_write_bytes(
                run_dir / "record.json", json.dumps(record.to_json(), indent=2).encode()
            )
        log.info("run %s: %s (%s)", run_id, record.result, "; ".join(record.reasons))
        return record

    def _run(self, record: RunRecord, run_dir: Path) -> None:
        with _timed(record, "snapshot"):
            data = self._snapshot(record)
        with _timed(record, "backbone"):
            backbone = self.ensure_backbone()
        with _timed(record, "features"):
            x_train, x_holdout = self._split_features(backbone, data)
        with _timed(record, "train"):
            head = self._train_head(data, x_train, run_dir)
        if self.settings.fine_tune_layers > 0:
            with _timed(record, "fine_tune"):
                backbone = self._fine_tune(record, backbone, head, data)
                x_train, x_holdout = self._split_features(backbone, data)
        with _timed(record, "export"):
            head_onnx = export_function(
                head_function(head.model, backbone.feature_dim),
                input_name="features",
                output_name="probabilities",
                sample=x_train[: min(len(x_train), 16)],
            )
        with _timed(record, "evaluate"):
            decision = self._evaluate(record, data, head, head_onnx, x_holdout)
        record.reasons = decision.reasons
        if not decision.promote:
            record.result = RunResult.REJECTED
            return
        with _timed(record, "monitoring"):
            calibration = self._calibrate(data, head_onnx, x_holdout)
            features = np.concatenate([x_train, x_holdout])
            reference = DriftReference.build(features, self.settings.seed)
        with _timed(record, "publish"):
            record.version = self._publish(
                record, backbone, head_onnx, data, head, decision, calibration, reference
            )
            record.result = self._serve(record, backbone)

    def _snapshot(self, record: RunRecord) -> _Snapshot:
        """The labels as of now, of the classes that can train (admitted by the new-class
        policy, with `min_samples_per_class` training samples), split by the stable
        holdout hash where a class can spare samples. The others wait (recorded with
        why) and never hold the rest back; NotEnoughData when fewer than two classes
        can train."""
        s = self.settings
        whose = {
            "principals": _names(s.train_principals),
            "exclude_principals": _names(s.exclude_principals),
        }
        records = self.store.current_labels(**whose)
        labelers = Counter(label for label, _ in {(r.label, r.principal) for r in records})
        known = self._served_labels(record.served_before)
        approved = self.store.approved_labels()
        admitted = self.class_policy.admitted(labelers, known, approved)
        waiting = {
            label: (
                f"quarantined: {self.class_policy.status(label, count, known, approved)[1]} "
                "more labelers (distinct principals) or an approval"
            )
            for label, count in labelers.items()
            if label not in admitted
        }
        train, holdout, borrowed = split_holdout(
            [r for r in records if r.label in admitted],
            s.holdout_percent,
            s.holdout_min_class_samples,
        )
        train_counts = Counter(r.label for r in train)
        for label in sorted(admitted):
            if train_counts[label] < s.min_samples_per_class:
                waiting[label] = (
                    f"{train_counts[label]} of {s.min_samples_per_class} training samples"
                )
        records = [r for r in records if r.label not in waiting]
        labels = sorted({r.label for r in records})
        # Samples whose labelers disagree train no class until one withdraws or an admin
        # clears them (current_labels leaves them out); the record says how many.
        record.dataset = {
            "waiting": dict(sorted(waiting.items())),
            "conflicting_samples": self.store.conflicting_samples(**whose),
        }
        if len(labels) < 2:
            waits = "; ".join(f"{label}: {why}" for label, why in sorted(waiting.items()))
            raise NotEnoughData(
                f"need labeled samples of at least 2 classes that can train, have {labels}"
                + (f" (waiting: {waits})" if waits else "")
            )
        if waiting:
            log.info("classes waiting, training without them: %s", waiting)
        record.label_seq = max(r.seq for r in records)
        record.newest_label_at = max(r.created_at for r in records)
        train = [r for r in train if r.label not in waiting]
        holdout = [r for r in holdout if r.label not in waiting]
        train_counts = Counter({label: train_counts[label] for label in labels})
        holdout_counts = Counter(r.label for r in holdout)
        record.dataset |= {
            "labels": labels,
            "train": len(train),
            "holdout": len(holdout),
            "train_per_class": dict(train_counts),
            "holdout_per_class": {label: holdout_counts[label] for label in labels},
            # Trained on every sample, too small to hold any out: in the model, unjudged.
            "not_evaluated": [label for label in labels if not holdout_counts[label]],
            # Holdout-hashed samples this version trains on (their class was too small to
            # spare them): a later run must not judge this version on them.
            "borrowed_from_holdout": sorted(r.sample_id for r in borrowed if r.label in labels),
            "fingerprint": _fingerprint(records),
            "label_seq": record.label_seq,
            # Lets every server measure label-acknowledged -> this version answering.
            "newest_label_at": record.newest_label_at,
        }
        index = {label: i for i, label in enumerate(labels)}
        y_train = np.array([index[r.label] for r in train], dtype=np.int64)
        return _Snapshot(labels, train, holdout, train_counts, y_train)

    def _split_features(
        self, backbone: BackboneManifest, data: _Snapshot
    ) -> tuple[np.ndarray, np.ndarray]:
        x_train = self.features(backbone, [r.sample_id for r in data.train])
        x_holdout = (
            self.features(backbone, [r.sample_id for r in data.holdout])
            if data.holdout
            else np.zeros((0, backbone.feature_dim), np.float32)
        )
        return x_train, x_holdout

    def _train_head(self, data: _Snapshot, x_train: np.ndarray, run_dir: Path) -> HeadResult:
        s = self.settings
        return train_head(
            x_train,
            data.y_train,
            len(data.labels),
            hidden_units=list(s.hidden_units),
            dropout=s.dropout,
            learning_rate=s.learning_rate,
            epochs=s.epochs,
            batch_size=s.batch_size,
            patience=s.patience,
            validation_percent=s.validation_percent,
            seed=s.seed,
            normalize=s.normalize_features,
            log_dir=str(run_dir / "tensorboard"),
        )

    def _fine_tune(
        self, record: RunRecord, backbone: BackboneManifest, head: HeadResult, data: _Snapshot
    ) -> BackboneManifest:
        """Top backbone layers trained end to end; returns the new, exported backbone."""
        s = self.settings
        tuned = fine_tune(
            self.build_keras_backbone(),
            head.model,
            self.pixels(backbone, [r.sample_id for r in data.train]),
            data.y_train,
            len(data.labels),
            layers=s.fine_tune_layers,
            epochs=s.fine_tune_epochs,
            learning_rate=s.fine_tune_learning_rate,
            batch_size=s.batch_size,
            augment=tuple(s.fine_tune_augment),
            seed=s.seed,
        )
        head.history.update({f"fine_tune_{k}": v for k, v in tuned.history.items()})
        record.dataset["fine_tuned_from"] = backbone.id
        return self._export_backbone(
            tuned.backbone,
            {
                "fine_tuned_from": backbone.id,
                "unfrozen_layers": tuned.unfrozen,
                "run": record.run_id,
            },
        )

    def _evaluate(
        self,
        record: RunRecord,
        data: _Snapshot,
        head: HeadResult,
        head_onnx: bytes,
        x_holdout: np.ndarray,
    ) -> GateDecision:
        """The candidate and the served version on the same holdout samples, then the gate."""
        labels = data.labels
        actual = [r.label for r in data.holdout]
        predicted = _predict(head_onnx, x_holdout, labels)
        candidate = evaluate(predicted, actual, labels)
        candidate_right = _correct(predicted, actual)
        served = self._evaluate_served(data.holdout) if record.served_before else None
        paired = None
        if served is not None:
            # Only samples the served version never trained on judge it fairly.
            unseen = np.array([r.sample_id not in served.borrowed for r in data.holdout], bool)
            paired = candidate_right[unseen], served.right[unseen]
        record.metrics = {
            "holdout": candidate,
            "served_version_holdout": served.metrics if served else None,
            "training": {"best_epoch": head.best_epoch, "epochs_run": head.epochs_run},
        }
        decision = self.gate.decide(candidate_right, paired)
        record.metrics["gate"] = decision.checks
        return decision

    def _calibrate(self, data: _Snapshot, head_onnx: bytes, x_holdout: np.ndarray) -> Calibration:
        """The head's temperature on the holdout it never trained on; the server estimates
        accuracy without labels from the calibrated confidence."""
        index = {label: i for i, label in enumerate(data.labels)}
        actual = np.array([index[r.label] for r in data.holdout], dtype=np.int64)
        calibration = fit_temperature(_probabilities(head_onnx, x_holdout), actual)
        log.info(
            "calibration: temperature %.3f on %d holdout samples",
            calibration.temperature,
            calibration.samples,
        )
        return calibration

    def _evaluate_served(self, holdout: list[LabelRecord]) -> _ServedOnHoldout | None:
        version = self.registry.current()
        if version is None or not holdout:
            return None
        manifest = self.registry.model_manifest(version)
        backbone = self.registry.backbone_manifest(manifest.backbone_id)
        features = self.features(backbone, [r.sample_id for r in holdout])
        head = self.registry.read_version_file(manifest, "head.onnx")
        predicted = _predict(head, features, list(manifest.labels), manifest.head_input)
        actual = [r.label for r in holdout]
        metrics = evaluate(predicted, actual, list(manifest.labels))
        metrics["version"] = version
        dataset = manifest.raw.get("dataset", {})
        return _ServedOnHoldout(
            metrics,
            _correct(predicted, actual),
            frozenset(
                dataset.get("borrowed_from_holdout", ()) if isinstance(dataset, dict) else ()
            ),
        )

    def _publish(
        self,
        record: RunRecord,
        backbone: BackboneManifest,
        head_onnx: bytes,
        data: _Snapshot,
        head: HeadResult,
        decision: GateDecision,
        calibration: Calibration,
        reference: DriftReference | None,
    ) -> str:
        card = {
            "run_id": record.run_id,
            "dataset": record.dataset,
            "metrics": record.metrics,
            "gate": decision.to_json(),
            "timings": record.timings,
            "training": {
                "hidden_units": list(self.settings.hidden_units),
                "dropout": self.settings.dropout,
                "learning_rate": self.settings.learning_rate,
                "seed": self.settings.seed,
                "history": head.history,
            },
            "backbone_source": dict(backbone.source),
            "calibration": calibration.to_json(),
            "drift_reference": (
                {
                    "file": REFERENCE_FILE,
                    "components": reference.components,
                    "reference_rows": len(reference.reference),
                }
                if reference is not None
                else None
            ),
        }
        card_files = {"training_curves.png": training_curves(head.history)}
        matrix = record.metrics["holdout"]["confusion_matrix"]
        if record.metrics["holdout"]["samples"]:
            card_files["confusion_matrix.png"] = confusion_matrix(matrix)
        version = self.registry.publish_version(
            head_onnx=head_onnx,
            labels=data.labels,
            backbone=backbone,
            head_input="features",
            head_output="probabilities",
            card=card,
            card_files=card_files,
            extra_files={REFERENCE_FILE: reference.to_bytes()} if reference is not None else None,
            parent=record.served_before,
        )
        return version

    def _serve(self, record: RunRecord, backbone: BackboneManifest) -> RunResult:
        """CURRENT moves to the new version (rollout `direct`), or the version becomes the
        challenger of an experiment against the served one (`shadow`, `canary`): possible
        when one is served on the same backbone (a fine-tuned backbone is served directly)."""
        assert record.version is not None
        champion = record.served_before
        rollout = Rollout(self.settings.rollout)
        if rollout != Rollout.DIRECT and champion is not None:
            served = self.registry.model_manifest(champion)
            if served.backbone_id == backbone.id:
                experiment = propose_challenger(
                    self.registry,
                    champion,
                    record.version,
                    rollout,
                    self.settings.rollout_share,
                    by=f"trainer run {record.run_id}",
                )
                record.reasons.append(
                    f"published as challenger of {champion} ({rollout}, share "
                    f"{experiment.share}): live labels decide whether it serves"
                )
                record.published_at = time.time()
                return RunResult.CHALLENGER
            record.reasons.append(
                f"served directly: its backbone differs from {champion}'s (fine-tuned), so it "
                "cannot score that version's features in an experiment"
            )
        # Only over the version this run was judged against: a rollback made meanwhile
        # wins, and the run fails saying CURRENT moved.
        self.registry.set_current(record.version, expected=champion)
        record.published_at = time.time()
        return RunResult.PROMOTED


def _predict(
    head_onnx: bytes, features: np.ndarray, labels: list[str], input_name: str = "features"
) -> list[str]:
    if len(features) == 0:
        return []
    probabilities = _probabilities(head_onnx, features, input_name)
    return [labels[i] for i in np.argmax(probabilities, axis=1)]


def _probabilities(
    head_onnx: bytes, features: np.ndarray, input_name: str = "features"
) -> np.ndarray:
    if len(features) == 0:
        return np.zeros((0, 0), np.float32)
    session = ort.InferenceSession(head_onnx, providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {input_name: features})
    return np.asarray(probabilities)


def _correct(predicted: list[str], actual: list[str]) -> np.ndarray:
    """Per sample: whether the prediction is the label."""
    return np.array([p == a for p, a in zip(predicted, actual, strict=True)], dtype=bool)


def _fingerprint(records: list[LabelRecord]) -> str:
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: r.sample_id):
        digest.update(f"{record.sample_id}:{record.label}\n".encode())
    return digest.hexdigest()


@contextmanager
def _timed(record: RunRecord, stage: str) -> Iterator[None]:
    """Record a stage's seconds in the run record once it completes."""
    started = time.perf_counter()
    yield
    record.timings[stage] = round(time.perf_counter() - started, 4)


def _progress(what: str, done: int, total: int) -> None:
    if not sys.stderr.isatty() and done < total:
        return  # in logs, one line when done instead of a redrawn bar
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r{what}: [{'#' * filled}{'-' * (width - filled)}] {done}/{total}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]
