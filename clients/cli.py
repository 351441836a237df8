"""`tlserve`: the command-line client.

    tlserve predict IMAGE... [--top-k K] [--json]
    tlserve models [--json]                  every model's versions (--model: one model's)
    tlserve health
    tlserve feedback IMAGE --label LABEL     one image
    tlserve feedback FOLDER                  FOLDER/<label>/<image> (Keras directory layout)
    tlserve feedback --csv FILE              rows of path,label[,prediction_id] (paths relative
                                             to the CSV; rows without a label are skipped)
    tlserve suggest FOLDER [--count N]       the images most worth labeling, into FOLDER, with
                                             FOLDER/labels.csv to fill in and send with --csv
    tlserve labels [--json]                  labels, sample counts, whether training uses them
    tlserve status [--json]                  the served version and what the trainer is doing
    tlserve labels approve LABEL...          admin: let new labels into training
    tlserve models rollback [VERSION]        admin: serve an earlier version (default: the previous)
    tlserve train [--reason TEXT]            admin: ask the trainer for a run now
    tlserve experiment [--json]              the model's experiment and its evidence
    tlserve experiment start VERSION [--rollout shadow|canary] [--share S]
                                             admin: judge VERSION against the served one
    tlserve experiment promote|abandon [--reason TEXT]
                                             admin: end the running experiment now

The server address comes from --target or TLSERVE_TARGET (default localhost:50051).
Every call sends --token (TLSERVE_TOKEN) as `authorization: Bearer <token>` when set;
--ca-file, --cert-file/--key-file and --server-name (TLSERVE_CA_FILE, TLSERVE_CERT_FILE,
TLSERVE_KEY_FILE, TLSERVE_SERVER_NAME) connect over TLS or mutual TLS.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tlserve.clients.calls import STRATEGIES
from tlserve.clients.client import DEFAULT_TARGET, TlserveClient, tls_credentials
from tlserve.clients.command import OneLineErrors, version_string
from tlserve.clients.types import Experiment, FeedbackItem, LiveMonitoring, ModelSummary


def non_negative(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{number} is negative; use 0 (server default) or more")
    return number


def positive(value: str) -> int:
    number = non_negative(value)
    if number == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(prog="tlserve", description="tlserve command-line client")
    parser.add_argument("--version", action="version", version=version_string())
    parser.add_argument(
        "--target",
        default=os.environ.get("TLSERVE_TARGET", DEFAULT_TARGET),
        help="server address host:port (env TLSERVE_TARGET)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline per call, seconds")
    parser.add_argument(
        "--model",
        default=os.environ.get("TLSERVE_MODEL", ""),
        help="the model every command speaks to (env TLSERVE_MODEL; default: the "
        "server's default model; `tlserve models` lists them)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("TLSERVE_TOKEN", ""),
        help="bearer token sent with every call (env TLSERVE_TOKEN)",
    )
    tls = parser.add_argument_group("TLS (any of these turns it on)")
    for flag, env, what in (
        ("--ca-file", "TLSERVE_CA_FILE", "PEM CA that signed the server's certificate"),
        ("--cert-file", "TLSERVE_CERT_FILE", "PEM client certificate, for mutual TLS"),
        ("--key-file", "TLSERVE_KEY_FILE", "PEM key of --cert-file"),
    ):
        tls.add_argument(
            flag, type=Path, default=os.environ.get(env) or None, help=f"{what} ({env})"
        )
    tls.add_argument(
        "--server-name",
        default=os.environ.get("TLSERVE_SERVER_NAME", ""),
        help="name the server's certificate must carry, if not the target host",
    )
    tls.add_argument(
        "--tls",
        action="store_true",
        default=bool(os.environ.get("TLSERVE_TLS")),
        help="TLS with the system's CAs (TLSERVE_TLS=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="classify image files")
    predict.add_argument("images", nargs="+", type=Path)
    predict.add_argument(
        "--top-k", type=non_negative, default=0, help="labels per image (0: server default)"
    )
    predict.add_argument("--json", action="store_true", help="print JSON")
    models = commands.add_parser("models", help="every served model and its versions")
    models.add_argument("--json", action="store_true", help="print JSON")
    models_commands = models.add_subparsers(dest="models_command")
    rollback = models_commands.add_parser("rollback", help="admin: serve an earlier version")
    rollback.add_argument("version", nargs="?", default="", help="default: the previous one")
    train = commands.add_parser("train", help="admin: ask the trainer for a run now")
    train.add_argument("--reason", default="tlserve train")
    commands.add_parser("health", help="exit 0 when the server is ready to predict")
    feedback = commands.add_parser("feedback", help="send labeled images")
    feedback.add_argument("path", nargs="?", type=Path, help="an image, or a label/image folder")
    feedback.add_argument("--label", help="label of a single image")
    feedback.add_argument(
        "--csv", type=Path, help="CSV of path,label[,prediction_id] rows (as `suggest` writes)"
    )
    feedback.add_argument("--source", default="cli", help="recorded as who labeled")
    suggest = commands.add_parser(
        "suggest", help="save the images most worth labeling, with a CSV to fill in"
    )
    suggest.add_argument("folder", type=Path, help="where the images and labels.csv go")
    suggest.add_argument("--count", type=positive, default=20, help="how many (default 20)")
    suggest.add_argument(
        "--strategy",
        default="balanced",
        choices=list(STRATEGIES),
    )
    suggest.add_argument("--json", action="store_true", help="print JSON")
    labels = commands.add_parser("labels", help="the label set with sample counts")
    labels.add_argument("--json", action="store_true", help="print JSON")
    status = commands.add_parser(
        "status", help="the served version and what the trainer is doing or waiting for"
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    experiment = commands.add_parser(
        "experiment", help="the model's champion/challenger experiment (admin: start, end)"
    )
    experiment.add_argument("--json", action="store_true", help="print JSON")
    experiment_commands = experiment.add_subparsers(dest="experiment_command")
    start = experiment_commands.add_parser(
        "start", help="admin: judge a published version against the served one on live labels"
    )
    start.add_argument("version", help="the challenger: a published version, same backbone")
    start.add_argument("--rollout", choices=["shadow", "canary"], default="shadow")
    start.add_argument(
        "--share",
        type=float,
        default=1.0,
        help="shadow: of requests it scores (default 1); canary: of callers it answers",
    )
    start.add_argument("--max-labels", type=non_negative, default=0, help="0: server setting")
    start.add_argument("--max-hours", type=float, default=0.0, help="0: server setting")
    for outcome in ("promote", "abandon"):
        end = experiment_commands.add_parser(outcome, help=f"admin: {outcome} the challenger now")
        end.add_argument("--reason", default="")
    labels_commands = labels.add_subparsers(dest="labels_command")
    approve = labels_commands.add_parser("approve", help="admin: let new labels into training")
    approve.add_argument("labels", nargs="+")
    return parser


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
STREAM_CHUNK = 128


@dataclass(frozen=True)
class Row:
    """One image to label: a file, and the prediction it came from if known."""

    path: Path
    label: str
    prediction_id: str = ""


def _feedback_items(args: argparse.Namespace) -> list[Row]:
    if args.csv is not None:
        return _csv_rows(args.csv)
    if args.path is None:
        raise ValueError("give an image with --label, a folder, or --csv FILE")
    if not args.path.exists():
        raise ValueError(f"no such file or folder: {args.path}")
    if args.path.is_dir():
        if args.label:
            raise ValueError("--label is for a single image; a folder's labels are its subfolders")
        return [
            Row(image, image.parent.name)
            for image in sorted(args.path.glob("*/*"))
            if image.suffix.lower() in IMAGE_SUFFIXES
        ]
    if not args.label:
        raise ValueError(f"{args.path} is one image: give its label with --label")
    return [Row(args.path, args.label)]


def _csv_rows(path: Path) -> list[Row]:
    """path,label[,prediction_id] rows (a header row is optional); rows left without a
    label are skipped, as `tlserve suggest` leaves them for people to fill in."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path} is not a UTF-8 CSV file: {exc}") from None
    if rows and [cell.strip().lower() for cell in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
        first_line = 2
    else:
        first_line = 1
    items = []
    for line, row in enumerate(rows, start=first_line):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < 2:
            raise ValueError(
                f"{path} line {line}: expected path,label[,prediction_id], got {len(row)} column"
            )
        image, label = row[0].strip(), row[1].strip()
        if label:
            prediction_id = row[2].strip() if len(row) > 2 else ""
            items.append(Row(path.parent / image, label, prediction_id))
    return items


def _progress(done: int, total: int, rejected: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    bar = "#" * filled + "-" * (width - filled)
    sys.stderr.write(f"\r[{bar}] {done}/{total} sent, {rejected} rejected")
    sys.stderr.flush()


def _feedback(client: TlserveClient, args: argparse.Namespace) -> int:
    items = _feedback_items(args)
    if not items:
        print("tlserve: error: no labeled images found", file=sys.stderr)
        return 2
    missing = [str(row.path) for row in items if not row.prediction_id and not row.path.is_file()]
    if missing:
        raise ValueError(f"no such file: {', '.join(missing[:5])}")
    accepted, resent, errors = 0, 0, []
    for start in range(0, len(items), STREAM_CHUNK):
        chunk = items[start : start + STREAM_CHUNK]
        receipt = client.stream_feedback(
            [_feedback_item(row, args.source, args.model) for row in chunk],
            timeout=max(60.0, args.timeout),
        )
        accepted += receipt.accepted
        resent += receipt.duplicates
        expired = [
            chunk[index]
            for index, code, _ in receipt.errors
            if code == "NOT_FOUND" and chunk[index].prediction_id and chunk[index].path.is_file()
        ]
        if expired:  # the kept prediction is gone: send its image instead
            retry = client.stream_feedback(
                [
                    _feedback_item(Row(row.path, row.label), args.source, args.model)
                    for row in expired
                ],
                timeout=max(60.0, args.timeout),
            )
            accepted += retry.accepted
            resent += retry.duplicates
            errors += [(expired[index].path, code, why) for index, code, why in retry.errors]
        errors += [
            (chunk[index].path, code, reason)
            for index, code, reason in receipt.errors
            if chunk[index] not in expired
        ]
        _progress(start + len(chunk), len(items), len(errors))
    sys.stderr.write("\n")
    for path, code, reason in errors:
        print(f"{path}: {code}: {reason}", file=sys.stderr)
    before = f", {resent} stored before (sent again)" if resent else ""
    print(f"{accepted - resent} labels stored{before}, {len(errors)} rejected")
    return 1 if errors else 0


def _feedback_item(row: Row, source: str, model: str) -> FeedbackItem:
    scope = f"{model}:" if model else ""  # keys are unique across models
    if row.prediction_id:
        key = f"cli:{scope}{row.prediction_id}:{row.label}"
        return FeedbackItem(
            row.label,
            prediction_id=row.prediction_id,
            idempotency_key=key,
            source=source,
            model=model,
        )
    data = row.path.read_bytes()
    # Same image and label, same key: re-running an upload stores nothing twice.
    key = f"cli:{scope}{hashlib.sha256(data).hexdigest()}:{row.label}"
    return FeedbackItem(row.label, image=data, idempotency_key=key, source=source, model=model)


def _suggest(client: TlserveClient, args: argparse.Namespace) -> int:
    suggestions = client.suggest_labels(args.count, args.strategy, model=args.model)
    args.folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for suggestion in suggestions:
        name = f"{suggestion.prediction_id}.png"
        (args.folder / name).write_bytes(suggestion.image_png)
        guess = suggestion.top[0] if suggestion.top else None
        rows.append(
            {
                "path": name,
                "label": "",
                "prediction_id": suggestion.prediction_id,
                "model_guess": guess.label if guess else "",
                "guess_score": f"{guess.score:.4f}" if guess else "",
            }
        )
    sheet = args.folder / "labels.csv"
    with open(sheet, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(
            handle, ["path", "label", "prediction_id", "model_guess", "guess_score"]
        )
        writer.writeheader()
        writer.writerows(rows)
    if args.json:
        print(json.dumps({"csv": str(sheet), "suggestions": rows}, indent=2))
        return 0
    print(f"{len(rows)} images in {args.folder}; fill in the label column of {sheet}, then:")
    print(f"  tlserve feedback --csv {sheet}")
    return 0


def _labels(client: TlserveClient, args: argparse.Namespace) -> int:
    if args.labels_command == "approve":
        approved = client.approve_labels(args.labels, model=args.model)
        print(f"approved for training: {', '.join(approved)}")
        return 0
    counts = client.list_labels(model=args.model)
    if args.json:
        print(json.dumps({"labels": [asdict(c) for c in counts]}, indent=2))
        return 0
    print(f"{'samples':>8} {'holdout':>8}  {'status':<12} label")
    for count in counts:
        waiting = f" ({count.labelers_needed} more labelers)" if count.labelers_needed else ""
        print(f"{count.samples:>8} {count.holdout:>8}  {count.status:<12} {count.label}{waiting}")
    print(f"{sum(c.samples for c in counts):>8} samples in all")
    disputed = client.conflicting_samples(model=args.model)
    if disputed:
        print(
            f"{disputed:>8} samples disputed: their labelers disagree, so they train no class "
            "until one retracts its label or an admin clears them (RetractLabel)"
        )
    return 0


def _monitoring_line(monitoring: LiveMonitoring) -> str:
    estimate = (
        f"estimated accuracy {monitoring.estimated_accuracy:.3f} on its last "
        f"{monitoring.estimated_from} answers (temperature {monitoring.temperature:.2f})"
        if monitoring.estimated_from
        else "estimated accuracy: no answers yet"
    )
    if monitoring.drift_state in ("ok", "drift"):
        drift = (
            f"drift: {monitoring.drift_state} (p {monitoring.drift_p_value:.3g} on the last "
            f"{monitoring.drift_window} predictions; {monitoring.drift_alarmed_windows} of "
            f"{monitoring.drift_tested_windows} windows alarmed)"
        )
    else:
        drift = f"drift: {monitoring.drift_state}"
    return f"live: {estimate}; {drift}"


def _experiment(client: TlserveClient, args: argparse.Namespace) -> int:
    if args.experiment_command == "start":
        experiment: Experiment | None = client.start_experiment(
            args.version,
            args.rollout,
            args.share,
            model=args.model,
            max_labels=args.max_labels,
            max_hours=args.max_hours,
        )
    elif args.experiment_command in ("promote", "abandon"):
        experiment = client.end_experiment(args.experiment_command, args.reason, model=args.model)
    else:
        experiment = client.get_model(model=args.model).experiment
    if args.json:
        print(json.dumps(asdict(experiment) if experiment else None, indent=2))
    elif experiment is None:
        print("no experiment yet (admin: tlserve experiment start VERSION)")
    else:
        print("\n".join(_experiment_lines(experiment)))
    return 0


def _experiment_lines(experiment: Experiment) -> list[str]:
    whose = "requests" if experiment.rollout == "shadow" else "callers"
    share = f"{experiment.share:.0%} of {whose}"
    lines = [
        f"experiment: {experiment.challenger_version} against {experiment.champion_version} "
        f"({experiment.rollout}, {share}): {experiment.state}"
        + (f" by {experiment.ended_by}: {experiment.reason}" if experiment.ended_by else "")
    ]
    evidence = experiment.evidence
    if evidence is not None and evidence.pairs:
        lines.append(
            f"  {evidence.pairs} labeled pairs: champion right on {evidence.champion_correct}, "
            f"challenger on {evidence.challenger_correct}; of the "
            f"{evidence.wins + evidence.losses} they disagreed on, the challenger won "
            f"{evidence.wins} (share "
            f"{evidence.win_share_low:.2f}..{evidence.win_share_high:.2f} at "
            f"{1 - experiment.alpha:.0%}); p(no better) {evidence.p_better:.3g}, "
            f"p(no worse) {evidence.p_worse:.3g}"
        )
    elif experiment.state == "running":
        lines.append("  no labeled pairs yet: send labels by prediction id")
    return lines


def _status(client: TlserveClient, args: argparse.Namespace) -> int:
    training = client.training_status(model=args.model)
    try:
        served: ModelSummary | None = client.get_model(model=args.model)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise
        served = None
    if args.json:
        document = {
            "served_version": served.version if served else None,
            "live_accuracy": served.live_accuracy if served else None,
            "live_feedback_count": served.live_feedback_count if served else 0,
            "monitoring": asdict(served.monitoring) if served and served.monitoring else None,
            "experiment": asdict(served.experiment) if served and served.experiment else None,
            "training": asdict(training),
        }
        print(json.dumps(document, indent=2))
        return 0
    if served is None:
        print("serving: nothing yet")
    else:
        live = (
            f"live accuracy {served.live_accuracy:.3f} on {served.live_feedback_count} labels"
            if served.live_feedback_count
            else "no live feedback yet"
        )
        print(f"serving: {served.version} ({', '.join(served.labels)}); {live}")
        if served.monitoring is not None:
            print(_monitoring_line(served.monitoring))
        if served.experiment is not None:
            print("\n".join(_experiment_lines(served.experiment)))
    print(f"trainer: {training.state}{' (stale)' if training.stale else ''}: {training.detail}")
    run = training.last_run
    if run is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.finished_at))
        print(f"last run: {run.run_id} {run.result} at {when} on {run.labels} labels")
        for reason in run.reasons:
            print(f"  {reason}")
    for label, why in sorted(training.waiting_classes.items()):
        print(f"waiting class {label}: {why}")
    print(f"new labels since the last run: {training.new_labels}")
    print(f"next run: {training.next_trigger}")
    return 0


def _predict(client: TlserveClient, args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        print(f"tlserve: error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    result = client.predict(args.images, top_k=args.top_k, model=args.model)
    if args.json:
        rows = [
            {"image": str(path), **asdict(prediction)}
            for path, prediction in zip(args.images, result.predictions, strict=True)
        ]
        print(json.dumps({"model_version": result.model_version, "predictions": rows}, indent=2))
        return 0
    shown = max((len(p.top) for p in result.predictions), default=0)
    every = ", all shown" if result.label_count and shown == result.label_count else ""
    print(f"model version {result.model_version} ({result.label_count} labels{every})")
    for path, prediction in zip(args.images, result.predictions, strict=True):
        labels = "  ".join(f"{c.label} {c.score:.3f}" for c in prediction.top)
        print(f"{path}: {labels}  (id {prediction.prediction_id})")
    return 0


def _models(client: TlserveClient, args: argparse.Namespace) -> int:
    """Every served model's versions, or only --model's."""
    if args.model:
        names = [(args.model, False)]
    else:
        names = [(m.name, m.is_default) for m in client.served_models()]
    listings = []
    for name, is_default in names:
        versions, current = client.list_models(model=name)
        listings.append((name, is_default, current, versions))
    if args.json:
        document = {
            "models": [
                {
                    "model": name,
                    "default": is_default,
                    "current": current,
                    "versions": [asdict(v) for v in versions],
                }
                for name, is_default, current, versions in listings
            ]
        }
        print(json.dumps(document, indent=2))
        return 0
    for name, is_default, current, versions in listings:
        print(f"{name}{'  (default)' if is_default else ''}")
        _print_versions(versions, current)
    print("* serving   > CURRENT (not yet loaded)   ! cannot be read")
    return 0


def _print_versions(versions: list[ModelSummary], current: str | None) -> None:
    if not versions:
        print("  no versions published yet")
        return
    print(f"  {'':2}{'version':<26}{'labels':>7}  {'backbone':<14}{'created':<27}")
    for version in versions:
        if version.error:
            print(f"  ! {version.version:<26}unreadable: {version.error}")
            continue
        serving, pointed = version.serving, version.version == current
        marker = "* " if serving else ("> " if pointed else "  ")
        print(
            f"  {marker}{version.version:<26}{len(version.labels):>7}  "
            f"{version.backbone_id[:12]:<14}{version.created_at:<27}"
        )


def _health(channel: grpc.Channel, timeout: float) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    if not (args.tls or args.ca_file or args.cert_file or args.key_file):
        return None
    return tls_credentials(args.ca_file, args.cert_file, args.key_file)


def _main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        credentials = _credentials(args)
    except (OSError, ValueError) as exc:
        print(f"tlserve: error: TLS settings: {exc}", file=sys.stderr)
        return 2
    try:
        with TlserveClient(
            args.target,
            timeout=args.timeout,
            token=args.token,
            credentials=credentials,
            server_name=args.server_name,
        ) as client:
            if args.command == "predict":
                return _predict(client, args)
            if args.command == "models" and args.models_command == "rollback":
                previous, current = client.rollback(args.version, model=args.model)
                print(f"serving {current} (was {previous})")
                return 0
            if args.command == "models":
                return _models(client, args)
            if args.command == "train":
                request_id = client.trigger_training(args.reason, model=args.model)
                print(f"training requested (request {request_id})")
                return 0
            if args.command == "feedback":
                return _feedback(client, args)
            if args.command == "labels":
                return _labels(client, args)
            if args.command == "status":
                return _status(client, args)
            if args.command == "suggest":
                return _suggest(client, args)
            if args.command == "experiment":
                return _experiment(client, args)
            return _health(client.channel, args.timeout)
    except grpc.RpcError as exc:
        print(f"tlserve: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise  # an OSError, but the reader's doing: main() handles it
    except (ValueError, OSError) as exc:  # what the user gave cannot be used
        print(f"tlserve: error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, where a closed pipe can only be complained of
        return code
    except BrokenPipeError:
        # The reader went away (`tlserve models --json | head`): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as if killed by SIGPIPE, like other command-line tools
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
