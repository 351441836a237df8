"""The model slot: load and verify a published version, warm it, swap it in, drain the old one.

A version is a (backbone, head) pair. A head-only version reuses the resident backbone
session, so its swap costs milliseconds and no extra memory; a new backbone is loaded
and warmed in a worker thread while the old version keeps serving. Requests take a
lease on the version they started with, so a batch never mixes versions and an old
version's sessions are released only after its last lease ends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from tlserve.server.errors import ModelRejected, NoModel, NotFound, TlserveError
from tlserve.server.imaging import InputSpec
from tlserve.server.metrics import ServerMetrics
from tlserve.server.monitoring.calibration import Calibration
from tlserve.server.monitoring.drift import REFERENCE_FILE, DriftReference
from tlserve.server.monitoring.live import MonitoringSettings, VersionMonitor
from tlserve.server.registry import BackboneManifest, HeadScores, ModelManifest, Registry
from tlserve.server.registry.experiment import Experiment
from tlserve.server.runtime import SessionFactory

log = logging.getLogger(__name__)


@dataclass(eq=False)
class BackboneRuntime:
    """A resident backbone session: uint8 NHWC images -> features."""

    manifest: BackboneManifest
    session: ort.InferenceSession

    @property
    def id(self) -> str:
        return self.manifest.id

    def features(self, pixels: np.ndarray) -> np.ndarray:
        (features,) = self.session.run(
            [self.manifest.output_name], {self.manifest.input_name: pixels}
        )
        return np.asarray(features, dtype=np.float32)


@dataclass(eq=False)
class LoadedModel:
    """A verified, warmed version ready to answer requests."""

    manifest: ModelManifest
    backbone: BackboneRuntime
    head: ort.InferenceSession
    # Its accuracy estimate and drift test on the traffic it answers.
    monitor: VersionMonitor = field(
        default_factory=lambda: VersionMonitor(Calibration(), None, MonitoringSettings())
    )
    _leases: int = 0
    _retired: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _drained: threading.Event = field(default_factory=threading.Event)

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    @property
    def input_spec(self) -> InputSpec:
        return self.backbone.manifest.input_spec

    @property
    def providers(self) -> list[str]:
        return list(self.backbone.session.get_providers())

    def head_probabilities(self, features: np.ndarray) -> np.ndarray:
        (scores,) = self.head.run([self.manifest.head_output], {self.manifest.head_input: features})
        scores = np.asarray(scores, dtype=np.float32)
        if self.manifest.head_scores == HeadScores.LOGITS:
            shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
            return shifted / shifted.sum(axis=1, keepdims=True)
        return scores

    def acquire(self) -> bool:
        with self._lock:
            if self._retired:
                return False
            self._leases += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._leases -= 1
            if self._retired and self._leases == 0:
                self._drained.set()

    def retire(self) -> None:
        """Take no new leases; `drained` is set once the last one ends."""
        with self._lock:
            self._retired = True
            if self._leases == 0:
                self._drained.set()

    def wait_drained(self, timeout: float | None = None) -> bool:
        return self._drained.wait(timeout)

    @property
    def leases(self) -> int:
        return self._leases


class BackboneCache:
    """One resident session per backbone id, loaded on first use and shared by every
    version of every model on it; thread-safe (versions load in worker threads)."""

    def __init__(self, load: Callable[[str], BackboneRuntime]) -> None:
        self._load = load
        self._resident: dict[str, BackboneRuntime] = {}
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, backbone_id: str) -> BackboneRuntime:
        with self._lock:
            resident = self._resident.get(backbone_id)
            if resident is not None:
                return resident
            loading = self._loading.setdefault(backbone_id, threading.Lock())
        with loading:  # two models asking for one new backbone load it once
            with self._lock:
                resident = self._resident.get(backbone_id)
            if resident is None:
                resident = self._load(backbone_id)
                with self._lock:
                    self._resident[backbone_id] = resident
        with self._lock:
            self._loading.pop(backbone_id, None)
        return resident

    def keep_only(self, backbone_ids: set[str]) -> None:
        """Forget backbones no served version uses; a retired version still answering
        holds its own reference, so its requests finish on it."""
        with self._lock:
            for backbone_id in [b for b in self._resident if b not in backbone_ids]:
                del self._resident[backbone_id]

    @property
    def resident_ids(self) -> set[str]:
        with self._lock:
            return set(self._resident)


# Rows of a probability head sum to 1 within float32 rounding; more is not probabilities.
PROBABILITY_TOLERANCE = 1e-3
# One warm-up batch holds each kind of image once: noise, black, white, a gradient.
WARM_UP_KINDS = 4


class ModelLoader:
    """Turns a registry version into a LoadedModel, or refuses it with a reason.

    Backbones come from `backbones`: one resident session per id, shared by every version
    of every model that uses it (the server's `ModelSet` passes its own and forgets the
    ones no model serves)."""

    def __init__(
        self,
        registry: Registry,
        sessions: SessionFactory,
        warmup_batch: int,
        backbones: BackboneCache | None = None,
        monitoring: MonitoringSettings | None = None,
    ) -> None:
        self.registry = registry
        self.sessions = sessions
        self.warmup_batch = warmup_batch
        self.backbones = backbones if backbones is not None else BackboneCache(self.load_backbone)
        self.monitoring = monitoring or MonitoringSettings()

    def for_registry(self, registry: Registry) -> ModelLoader:
        """The same loader for another model's versions (same sessions and backbones)."""
        return ModelLoader(
            registry, self.sessions, self.warmup_batch, self.backbones, self.monitoring
        )

    def load(self, version: str) -> LoadedModel:
        try:
            manifest = self.registry.model_manifest(version)
        except NotFound as exc:
            raise ModelRejected(str(exc)) from None
        head_onnx = self.registry.verify_version(manifest)  # every file it lists, not only the head
        backbone = self.backbones.get(manifest.backbone_id)
        try:
            head = self.sessions.create(head_onnx)
        except Exception as exc:  # ONNX Runtime raises its own exception types
            raise ModelRejected(f"version {version}: head.onnx does not load: {exc}") from None
        _check_head_signature(manifest, backbone.manifest, head)
        model = LoadedModel(
            manifest=manifest, backbone=backbone, head=head, monitor=self._monitor(manifest)
        )
        self._warm_up(model)
        return model

    def _monitor(self, manifest: ModelManifest) -> VersionMonitor:
        """The version's calibration and drift sketch from its model.json and files; a
        version without them (older, or too few samples) is monitored with what it has."""
        reference = None
        if REFERENCE_FILE in manifest.files:
            reference = DriftReference.from_bytes(
                self.registry.read_version_file(manifest, REFERENCE_FILE),
                feature_dim=manifest.feature_dim,
                what=f"version {manifest.version}",
            )
        calibration = Calibration.from_manifest(manifest.raw.get("calibration"))
        return VersionMonitor(calibration, reference, self.monitoring)

    def load_backbone(self, backbone_id: str) -> BackboneRuntime:
        manifest = self.registry.backbone_manifest(backbone_id)
        onnx_bytes = self.registry.read_backbone_onnx(backbone_id)
        try:
            session = self.sessions.create(onnx_bytes)
        except Exception as exc:
            raise ModelRejected(
                f"backbone {backbone_id[:12]}: backbone.onnx does not load: {exc}"
            ) from None
        _check_backbone_signature(manifest, session)
        return BackboneRuntime(manifest=manifest, session=session)

    def _warm_up(self, model: LoadedModel) -> None:
        """Run every batch size the server will use on varied images (black, white, noise,
        gradients: a head that breaks only on non-zero input shows here); the scores must
        be finite probabilities, each row summing to 1."""
        spec = model.input_spec
        for batch in sorted({1, WARM_UP_KINDS, self.warmup_batch}):
            pixels = _warm_up_images(batch, spec.height, spec.width)
            try:
                features = model.backbone.features(pixels)
                probabilities = model.head_probabilities(features)
            except Exception as exc:
                raise ModelRejected(
                    f"version {model.version}: warm-up inference failed: {exc}"
                ) from None
            if probabilities.shape != (batch, len(model.labels)):
                raise ModelRejected(
                    f"version {model.version}: head returned shape {list(probabilities.shape)} "
                    f"for a batch of {batch}, expected [{batch}, {len(model.labels)}]"
                )
            if not np.isfinite(probabilities).all():
                raise ModelRejected(f"version {model.version}: warm-up produced non-finite scores")
            sums = probabilities.sum(axis=1)
            if probabilities.min() < -PROBABILITY_TOLERANCE or not np.allclose(
                sums, 1.0, atol=PROBABILITY_TOLERANCE
            ):
                raise ModelRejected(
                    f"version {model.version}: the head's scores are not probabilities (rows sum "
                    f"to {sums.min():.4g}..{sums.max():.4g}); a head that outputs logits must "
                    'say so in model.json (head.scores = "logits") and the server applies softmax'
                )


def _warm_up_images(batch: int, height: int, width: int) -> np.ndarray:
    """Noise first (so even batch 1 is not all zeros), then black, white, a gradient,
    then more noise."""
    rng = np.random.default_rng(batch)
    gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    fixed = [
        np.zeros((height, width, 3), np.uint8),
        np.full((height, width, 3), 255, np.uint8),
        np.broadcast_to(gradient, (height, width, 3)).astype(np.uint8),
    ]
    images = [
        fixed[i - 1] if 1 <= i <= len(fixed) else rng.integers(0, 256, (height, width, 3), np.uint8)
        for i in range(batch)
    ]
    return np.stack(images)


def _dims(node: ort.NodeArg) -> list[int | str | None]:
    return list(node.shape)


def _check_backbone_signature(manifest: BackboneManifest, session: ort.InferenceSession) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    what = f"backbone {manifest.id[:12]}"
    if len(inputs) != 1:
        raise ModelRejected(
            f"{what}: has {len(inputs)} inputs {[i.name for i in inputs]}, expected exactly one"
        )
    (image,) = inputs
    if image.name != manifest.input_name or image.type != "tensor(uint8)":
        raise ModelRejected(
            f"{what}: input is {image.name!r} {image.type}, "
            f"backbone.json says {manifest.input_name!r} tensor(uint8)"
        )
    dims = _dims(image)
    if len(dims) != 4 or dims[1:] != [manifest.height, manifest.width, 3]:
        raise ModelRejected(
            f"{what}: input shape {dims}, expected [batch, {manifest.height}, {manifest.width}, 3]"
        )
    names = [o.name for o in outputs]
    if manifest.output_name not in names:
        raise ModelRejected(f"{what}: no output {manifest.output_name!r} (has {names})")
    output = outputs[names.index(manifest.output_name)]
    out_dims = _dims(output)
    if len(out_dims) != 2 or out_dims[1] != manifest.feature_dim:
        raise ModelRejected(
            f"{what}: output shape {out_dims}, expected [batch, {manifest.feature_dim}]"
        )


def _check_head_signature(
    manifest: ModelManifest, backbone: BackboneManifest, head: ort.InferenceSession
) -> None:
    what = f"version {manifest.version}"
    claimed = (manifest.input_height, manifest.input_width, manifest.feature_dim)
    actual = (backbone.height, backbone.width, backbone.feature_dim)
    if claimed != actual:
        raise ModelRejected(
            f"{what}: model.json says input {claimed[0]}x{claimed[1]} and {claimed[2]} "
            f"features, its backbone {backbone.id[:12]} takes {actual[0]}x{actual[1]} and "
            f"gives {actual[2]}"
        )
    inputs, outputs = head.get_inputs(), head.get_outputs()
    if len(inputs) != 1 or inputs[0].name != manifest.head_input:
        raise ModelRejected(
            f"{what}: head inputs are {[i.name for i in inputs]}, "
            f"expected [{manifest.head_input!r}]"
        )
    in_dims = _dims(inputs[0])
    if inputs[0].type != "tensor(float)" or len(in_dims) != 2 or in_dims[1] != backbone.feature_dim:
        raise ModelRejected(
            f"{what}: head input is {inputs[0].type} {in_dims}, "
            f"expected tensor(float) [batch, {backbone.feature_dim}]"
        )
    names = [o.name for o in outputs]
    if manifest.head_output not in names:
        raise ModelRejected(f"{what}: head has no output {manifest.head_output!r} (has {names})")
    out_dims = _dims(outputs[names.index(manifest.head_output)])
    if len(out_dims) != 2 or out_dims[1] != len(manifest.labels):
        raise ModelRejected(
            f"{what}: head output shape {out_dims} does not match its {len(manifest.labels)} labels"
        )


class ModelSlot:
    """Holds the served version and replaces it when the registry's CURRENT moves."""

    def __init__(
        self,
        registry: Registry,
        loader: ModelLoader,
        metrics: ServerMetrics,
        refused_retry_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        model_name: str = "tlserve",
    ) -> None:
        self.model_name = model_name
        self.registry = registry
        self.loader = loader
        self.metrics = metrics
        self.refused_retry_seconds = refused_retry_seconds
        self._clock = clock
        self._current: LoadedModel | None = None
        self._closed = False
        self._refused: dict[str, float] = {}
        self._current_problem: str | None = None
        self._refresh_lock = asyncio.Lock()
        self._on_swap: list[Callable[[LoadedModel], None]] = []
        # The model's experiment as last read (running, or how the last one ended), and
        # the challenger version loaded for it while it runs against the served version.
        self._experiment: Experiment | None = None
        self._challenger: LoadedModel | None = None
        self._experiment_problem: str | None = None

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def experiment(self) -> Experiment | None:
        return self._experiment

    @property
    def challenger(self) -> LoadedModel | None:
        """The running experiment's challenger, loaded and on the served version's backbone."""
        return self._challenger

    @property
    def stored_as(self) -> str:
        """The model's key in the feedback store: '' for the default model, whatever the
        server calls it (so a renamed default keeps its labels), else its name."""
        return self.registry.model or ""

    def on_swap(self, callback: Callable[[LoadedModel], None]) -> None:
        self._on_swap.append(callback)

    def require(self) -> LoadedModel:
        """The served version, or NoModel (the core adds what the trainer waits for)."""
        model = self._current
        if model is None:
            if self._closed:
                raise NotFound(f"model {self.model_name!r} was removed from the registry")
            raise NoModel(
                "no model version is being served yet: the registry has no "
                f"{self.registry.pointer} version"
                + ("" if self.registry.model is None else f" (model {self.model_name!r})")
            )
        return model

    @contextmanager
    def lease(self) -> Iterator[LoadedModel]:
        """The served version, kept alive until the block ends."""
        while True:
            model = self.require()
            if model.acquire():
                break
            # Lost a race with a swap: the retired model takes no new leases, the new one will.
        try:
            yield model
        finally:
            model.release()

    @contextmanager
    def lease_challenger(self) -> Iterator[LoadedModel | None]:
        """The running experiment's challenger kept alive until the block ends, or None."""
        model = self._challenger
        if model is None or not model.acquire():
            yield None
            return
        try:
            yield model
        finally:
            model.release()

    async def refresh(self) -> bool:
        """Load CURRENT if it moved, then the experiment's challenger if it changed; returns
        True when a new version was swapped in."""
        async with self._refresh_lock:
            swapped = await self._follow_current()
            await self._follow_experiment()
            return swapped

    async def _follow_experiment(self) -> None:
        try:
            experiment, _ = await asyncio.to_thread(self.registry.experiment)
        except TlserveError as exc:
            if str(exc) != self._experiment_problem:
                self._experiment_problem = str(exc)
                log.error("model %s: experiment unusable, ignored: %s", self.model_name, exc)
            experiment = None
        else:
            self._experiment_problem = None
        self._experiment = experiment
        served = self._current
        wanted = (
            experiment.challenger
            if experiment is not None
            and experiment.running
            and served is not None
            and experiment.champion == served.version
            and not self._closed
            else None
        )
        loaded = self._challenger.version if self._challenger else None
        if wanted == loaded:
            return
        if self._challenger is not None:
            self._challenger.retire()
            self._challenger = None
        if wanted is None or served is None:
            return
        if self._recently_refused(wanted):
            return
        try:
            challenger = await asyncio.to_thread(self.loader.load, wanted)
        except TlserveError as exc:
            self._refuse(wanted, f"as challenger: {exc}")
            return
        if challenger.backbone is not served.backbone:
            challenger.retire()
            self._refuse(
                wanted,
                f"as challenger: it runs on backbone {challenger.backbone.id[:12]}, the served "
                f"version {served.version} on {served.backbone.id[:12]}; a challenger scores "
                "the features the champion computed, so it must share its backbone",
            )
            return
        self._challenger = challenger
        log.info(
            "model %s: challenger %s loaded (%s, share %.2f) against %s",
            self.model_name,
            wanted,
            experiment.mode if experiment else "",
            experiment.share if experiment else 0.0,
            served.version,
        )

    def _recently_refused(self, version: str) -> bool:
        """Refused (as a version or as a challenger) within `refused_retry_seconds`."""
        refused_at = self._refused.get(version)
        return refused_at is not None and self._clock() - refused_at < self.refused_retry_seconds

    async def _follow_current(self) -> bool:
        try:
            target = await asyncio.to_thread(self.registry.current)
        except TlserveError as exc:
            self._report_current_problem(str(exc))
            return False
        self._current_problem = None
        served = self._current.version if self._current else None
        if self._closed or target is None or target == served:
            return False
        if self._recently_refused(target):
            return False
        resident = self._current.backbone if self._current else None
        started = time.perf_counter()
        if self._challenger is not None and self._challenger.version == target:
            # A promoted challenger is loaded, verified and warm already: swapped as it is.
            model, self._challenger = self._challenger, None
        else:
            try:
                model = await asyncio.to_thread(self.loader.load, target)
            except TlserveError as exc:
                self._refuse(target, str(exc))
                return False
            except Exception as exc:  # a refused version must never take the server down
                log.exception("loading version %s failed unexpectedly", target)
                self._refuse(target, f"unexpected error: {exc}")
                return False
        head_only = resident is not None and model.backbone is resident
        self._swap(model)
        result = "head_only" if head_only else "full"
        self.metrics.model_swaps.labels(model=self.model_name, result=result).inc()
        self.metrics.model_load_seconds.labels(model=self.model_name).observe(
            time.perf_counter() - started
        )
        log.info(
            "model %s: serving version %s (%s swap, %d labels, providers %s)",
            self.model_name,
            model.version,
            "head-only" if head_only else "full",
            len(model.labels),
            ",".join(model.providers),
        )
        return True

    async def watch(self, poll_seconds: float) -> None:
        """Poll CURRENT forever (cancel the task to stop)."""
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("registry poll failed; retrying in %.1fs", poll_seconds)
            await asyncio.sleep(poll_seconds)

    def close(self) -> None:
        """Serve nothing more: the served version finishes its leases and is released."""
        self._closed = True
        if self._challenger is not None:
            self._challenger.retire()
            self._challenger = None
        if self._current is not None:
            self._current.retire()
            self._current = None
        self.metrics.forget_model(self.model_name)

    def _swap(self, model: LoadedModel) -> None:
        old, self._current = self._current, model
        self._refused.pop(model.version, None)
        if old is not None:
            old.retire()
        self.metrics.set_served_model(
            self.model_name, model.version, model.backbone.id, model.providers
        )
        self.metrics.forget_versions_except(
            self.model_name, {model.version, *([old.version] if old else [])}
        )
        newest_label_at = model.manifest.raw.get("dataset", {}).get("newest_label_at")
        if isinstance(newest_label_at, int | float) and newest_label_at > 0:
            self.metrics.feedback_to_serve.labels(model=self.model_name).observe(
                max(0.0, time.time() - newest_label_at)
            )
        for callback in self._on_swap:
            callback(model)

    def _report_current_problem(self, problem: str) -> None:
        """An unusable CURRENT is logged and counted once per distinct problem, not once
        per poll; the served version keeps answering meanwhile."""
        if problem == self._current_problem:
            return
        self._current_problem = problem
        self.metrics.current_problems.inc()
        served = self._current.version if self._current else "nothing"
        log.error("CURRENT is unusable, still serving %s: %s", served, problem)

    def _refuse(self, version: str, reason: str) -> None:
        self._refused[version] = self._clock()
        self.metrics.model_swaps.labels(model=self.model_name, result="refused").inc()
        served = self._current.version if self._current else "nothing"
        log.error("refused version %s, still serving %s: %s", version, served, reason)
