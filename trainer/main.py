"""`tlserve-trainer`: retrain the classifier head on the feedback, publish, export.

    tlserve-trainer run [--model NAME]     the loop: train on new labels, a timer or request,
                                           for the default model and every model of
                                           TLSERVE_MODELS_FILE (or only NAME)
    tlserve-trainer once [--model NAME]    one training run now (default: the default model)
    tlserve-trainer export VERSION OUT     one fused ONNX (images -> probabilities), parity-checked
    tlserve-trainer pretrain [OUT]         train the MNIST source ConvNet (the demo's backbone)

Settings: TLSERVE_* environment variables or --config FILE (TOML).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tlserve.clients.command import OneLineErrors, needs_extra, version_string
from tlserve.server.errors import StartupError, TlserveError
from tlserve.server.fsutil import require_writable


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null while TensorFlow loads: its C++ start-up lines (CPU
    features, CUDA probing, oneDNN; absl logs them before any log setting applies) would
    otherwise open every command's output. Python errors still surface."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


with needs_extra("trainer", "tlserve-trainer"), _native_stderr_silenced():
    import numpy as np
    import onnx
    import onnxruntime as ort
    from prometheus_client import CollectorRegistry, start_http_server

    from tlserve.server.registry import Registry
    from tlserve.server.store import open_store
    from tlserve.trainer.backbones import check_backbone
    from tlserve.trainer.errors import TrainerError
    from tlserve.trainer.loop import TrainerLoop
    from tlserve.trainer.metrics import TrainerMetrics
    from tlserve.trainer.models_file import ModelsFileError, load_models
    from tlserve.trainer.onnx_export import fuse
    from tlserve.trainer.pipeline import RunResult
    from tlserve.trainer.pretrain import CUT_LAYER, pretrain_digits
    from tlserve.trainer.settings import TrainerSettings


def _parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(prog="tlserve-trainer", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=version_string())
    parser.add_argument("--config", type=Path, help="TOML settings file")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="the training loop")
    once = commands.add_parser("once", help="one training run now")
    for command in (run, once):
        command.add_argument(
            "--model",
            default="",
            help="a named model of the models file (default: run trains every model, "
            "once the default model)",
        )
    export = commands.add_parser("export", help="write a fused standalone ONNX of a version")
    export.add_argument("version", help="version id, or `current`")
    export.add_argument("output", type=Path)
    pretrain = commands.add_parser("pretrain", help="train the MNIST source ConvNet")
    pretrain.add_argument("output", type=Path, nargs="?", help="model file (.keras)")
    pretrain.add_argument("--epochs", type=int, default=8)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = TrainerSettings.load(args.config)
    except Exception as exc:
        print(f"tlserve-trainer: invalid settings: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "pretrain":
            target = args.output or settings.data_dir / "pretrained" / "mnist_convnet.keras"
            report = pretrain_digits(target, epochs=args.epochs, seed=settings.seed)
            print(json.dumps({"model": str(target), "cut_layer": CUT_LAYER, **report}))
            return 0
        if args.command in ("run", "once"):
            for folder, setting in settings.folders_to_write():
                require_writable(folder, setting)
        registry = settings.open_registry()
        if args.command == "export":
            return _export(registry, args.version, args.output)
        models = _models(settings, args.model)
        for model_settings in models.values():
            check_backbone(model_settings.backbone, model_settings.backbone_weights or "none")
        store = open_store(settings.resolved_store_url)
        try:
            metrics_registry = CollectorRegistry()
            metrics = TrainerMetrics(metrics_registry)
            loops = []
            for name, model_settings in models.items():
                if name:
                    registry.add_model(name)  # servers load it once a version is current
                loops.append(
                    TrainerLoop(
                        model_settings,
                        store.for_model(name),
                        registry.for_model(name or None),
                        metrics.for_model(name or DEFAULT_MODEL),
                    )
                )
            if args.command == "once":
                record = loops[0].run_once("manual")
                print(
                    json.dumps(
                        {
                            "run": record.run_id,
                            "result": record.result,
                            "version": record.version,
                            "reasons": record.reasons,
                        }
                    )
                )
                return 0 if record.result != RunResult.FAILED else 1
            return _run(loops, settings, metrics_registry)
        finally:
            store.close()
    except (TrainerError, TlserveError, StartupError, ModelsFileError) as exc:
        print(f"tlserve-trainer: error: {exc}", file=sys.stderr)
        return 1


# The default model's name in the trainer's metrics (the server's default `model_name`).
DEFAULT_MODEL = "tlserve"


def _models(settings: TrainerSettings, only: str) -> dict[str, TrainerSettings]:
    """The models to train, by name ('' : the default model), each with its settings."""
    named = load_models(settings.models_file, settings) if settings.models_file else {}
    if only:
        if only not in named:
            listed = ", ".join(sorted(named)) or "none"
            raise TrainerError(
                f"--model {only!r} is not in the models file (TLSERVE_MODELS_FILE); it lists "
                f"{listed}"
            )
        return {only: named[only]}
    return {"": settings, **named}


def _run(loops: list[TrainerLoop], settings: TrainerSettings, metrics: CollectorRegistry) -> int:
    """Every model's loop in a thread of its own: one model's slow or failing run never
    delays another's (each holds its own model's training lock)."""
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=metrics)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threads = [
        threading.Thread(target=loop.run_forever, args=(stop,), name=f"model-{n}", daemon=True)
        for n, loop in enumerate(loops)
    ]
    for thread in threads:
        thread.start()
    while not stop.wait(0.5):
        pass
    for thread in threads:
        thread.join()
    return 0


def _export(registry: Registry, version: str, output: Path) -> int:
    version = registry.current() if version == "current" else version
    if version is None:
        raise TrainerError("the registry has no CURRENT version to export")
    manifest = registry.model_manifest(version)
    backbone = registry.backbone_manifest(manifest.backbone_id)
    backbone_bytes = registry.read_backbone_onnx(backbone.id)
    head_bytes = registry.read_version_file(manifest, "head.onnx")
    fused = with_metadata(
        fuse(backbone_bytes, head_bytes, features=backbone.output_name),
        {
            "tlserve.version": version,
            "tlserve.labels": json.dumps(list(manifest.labels)),
            "tlserve.input": json.dumps(
                {
                    "name": backbone.input_name,
                    "height": backbone.height,
                    "width": backbone.width,
                    "dtype": "uint8",
                    "layout": "NHWC",
                    "channels": "RGB",
                    "resize": str(backbone.resize),
                }
            ),
            "tlserve.output": json.dumps(
                {"name": manifest.head_output, "scores": str(manifest.head_scores)}
            ),
            "tlserve.backbone_id": backbone.id,
        },
    )
    sample = np.random.default_rng(0).integers(
        0, 256, (4, backbone.height, backbone.width, 3), dtype=np.uint8
    )
    providers = ["CPUExecutionProvider"]
    (features,) = ort.InferenceSession(backbone_bytes, providers=providers).run(
        None, {backbone.input_name: sample}
    )
    (expected,) = ort.InferenceSession(head_bytes, providers=providers).run(
        None, {manifest.head_input: features}
    )
    (actual,) = ort.InferenceSession(fused, providers=providers).run(
        None, {backbone.input_name: sample}
    )
    difference = float(np.max(np.abs(actual - expected)))
    if difference > 1e-5:
        raise TrainerError(f"fused model differs from the two-stage one by {difference:.3g}")
    output.write_bytes(fused)
    print(
        json.dumps(
            {
                "version": version,
                "output": str(output),
                "labels": list(manifest.labels),
                "input": backbone.input_name,
                "max_abs_difference": difference,
            }
        )
    )
    return 0


def with_metadata(model_bytes: bytes, properties: dict[str, str]) -> bytes:
    """The ONNX model with `properties` in its metadata_props, so any runtime can read
    the labels, input size and resize policy without tlserve's registry."""
    model = onnx.load_from_string(model_bytes)
    del model.metadata_props[:]
    for key, value in properties.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


if __name__ == "__main__":
    raise SystemExit(main())
