"""`tlserve`: the command-line client.

    tlserve predict IMAGE... [--top-k K] [--json]
    tlserve models [--json]
    tlserve health

The server address comes from --target or TLSERVE_TARGET (default localhost:50051).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.client import DEFAULT_TARGET, TlserveClient


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlserve", description="tlserve command-line client")
    parser.add_argument(
        "--target",
        default=os.environ.get("TLSERVE_TARGET", DEFAULT_TARGET),
        help="server address host:port (env TLSERVE_TARGET)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline per call, seconds")
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="classify image files")
    predict.add_argument("images", nargs="+", type=Path)
    predict.add_argument(
        "--top-k", type=int, default=0, help="labels per image (0: server default)"
    )
    predict.add_argument("--json", action="store_true", help="print JSON")
    models = commands.add_parser("models", help="list the registry's model versions")
    models.add_argument("--json", action="store_true", help="print JSON")
    commands.add_parser("health", help="exit 0 when the server is ready to predict")
    return parser


def _predict(client: TlserveClient, args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        print(f"tlserve: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    result = client.predict(args.images, top_k=args.top_k)
    if args.json:
        rows = [
            {"image": str(path), **asdict(prediction)}
            for path, prediction in zip(args.images, result.predictions, strict=True)
        ]
        print(json.dumps({"model_version": result.model_version, "predictions": rows}, indent=2))
        return 0
    print(f"model version {result.model_version}")
    for path, prediction in zip(args.images, result.predictions, strict=True):
        labels = "  ".join(f"{c.label} {c.score:.3f}" for c in prediction.top)
        print(f"{path}: {labels}  (id {prediction.prediction_id})")
    return 0


def _models(client: TlserveClient, args: argparse.Namespace) -> int:
    models, current = client.list_models()
    if args.json:
        print(json.dumps({"current": current, "models": [asdict(m) for m in models]}, indent=2))
        return 0
    if not models:
        print("no model versions published yet")
        return 0
    print(f"{'':2}{'version':<26}{'labels':>7}  {'backbone':<14}{'created':<27}")
    for model in models:
        marker = "* " if model.serving else ("> " if model.version == current else "  ")
        print(
            f"{marker}{model.version:<26}{len(model.labels):>7}  "
            f"{model.backbone_id[:12]:<14}{model.created_at:<27}"
        )
    print("* serving   > CURRENT (not yet loaded)")
    return 0


def _health(channel: grpc.Channel, timeout: float) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with TlserveClient(args.target, timeout=args.timeout) as client:
            if args.command == "predict":
                return _predict(client, args)
            if args.command == "models":
                return _models(client, args)
            return _health(client.channel, args.timeout)
    except grpc.RpcError as exc:
        print(f"tlserve: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
