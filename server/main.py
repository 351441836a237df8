"""`tlserve-server`: run the gRPC prediction server, or move its data set.

    tlserve-server [serve] [--config tlserve.toml] [--port N] [--data-dir DIR]
    tlserve-server export-data TARGET     (a folder, or a .tar / .tar.gz)
    tlserve-server import-data SOURCE     (a folder or tar written by export-data)
    tlserve-server probe [live|ready]     exit 0 when this host's server is live / ready

Settings come from TLSERVE_* environment variables and an optional TOML file;
flags override both. SIGTERM/SIGINT drain in-flight requests before exiting.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tlserve.clients.command import OneLineErrors, needs_extra, version_string
from tlserve.server.api.paths import LIVE_PATH, READY_PATH
from tlserve.server.errors import StartupError

with needs_extra("server", "tlserve-server"):
    from tlserve.server.settings import ServerSettings

# Serving and moving data import the server (aiohttp, numpy, ONNX Runtime, the stores)
# when they run: `probe`, the containers' HEALTHCHECK, imports none of it (it took
# 2.9-7.2 s under load, past the HEALTHCHECK's 5 s, when it imported everything).


def port_number(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0..65535; 0: any free one)")
    return port


def port_or_none(value: str) -> int | None:
    """A port number, or `none` (that listener off)."""
    if value.strip().lower() == "none":
        return None
    try:
        int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number or `none`") from None
    return port_number(value)


def _parser() -> argparse.ArgumentParser:
    # The options may come before or after the command; SUPPRESS keeps a subcommand's
    # parser from resetting what was given before it.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--config", type=Path, help="TOML settings file")
    common.add_argument("--port", type=port_number, help="gRPC port (TLSERVE_PORT)")
    common.add_argument(
        "--metrics-port",
        type=port_or_none,
        help="metrics port, or `none` for no metrics endpoint (TLSERVE_METRICS_PORT)",
    )
    common.add_argument("--data-dir", type=Path, help="data directory (TLSERVE_DATA_DIR)")
    common.add_argument("--registry-dir", type=Path, help="registry (TLSERVE_REGISTRY_DIR)")
    parser = OneLineErrors(
        prog="tlserve-server", description=__doc__.split("\n")[0], parents=[common]
    )
    parser.add_argument("--version", action="version", version=version_string())
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the server (the default)", parents=[common])
    export = commands.add_parser(
        "export-data", help="write labeled samples + labels.csv", parents=[common]
    )
    export.add_argument("target", type=Path)
    load = commands.add_parser(
        "import-data", help="load a data set written by export-data", parents=[common]
    )
    load.add_argument("source", type=Path)
    probe = commands.add_parser(
        "probe",
        help="exit 0 when the server on this host is live (or ready); for HEALTHCHECK",
        parents=[common],
    )
    probe.add_argument("state", nargs="?", choices=["live", "ready"], default="live")
    return parser


def _settings(args: argparse.Namespace) -> ServerSettings:
    given = vars(args)
    overrides = {
        name: given[name]
        for name in ("port", "metrics_port", "data_dir", "registry_dir")
        if name in given
    }
    return ServerSettings.load(given.get("config"), **overrides)


async def serve(settings: ServerSettings) -> None:
    with needs_extra("server", "tlserve-server"):
        from tlserve.server.app import TlserveServer  # noqa: PLC0415

    # Signals are taken before the listeners open: the gRPC port answers (and a caller may
    # decide to stop the server) before the HTTP and metrics listeners are up, and a
    # SIGTERM then must drain, not kill.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = TlserveServer(settings)
    try:
        await server.start()
    except BaseException:
        await server.stop(grace=0)  # close what did open, so nothing outlives the loop
        raise
    await stop.wait()
    logging.getLogger(__name__).info(
        "shutting down: draining for up to %.0fs", settings.drain_seconds
    )
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except Exception as exc:  # pydantic's message names the setting and what it accepts
        print(f"tlserve-server: invalid settings: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command in ("export-data", "import-data"):
        return _move_data(args, settings)
    if args.command == "probe":
        return probe(settings, args.state)
    from tlserve.server.security.errors import SecurityConfigError  # noqa: PLC0415

    try:
        asyncio.run(serve(settings))
    except SecurityConfigError as exc:
        print(f"tlserve-server: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"tlserve-server: {exc}", file=sys.stderr)
        return 1
    return 0


def probe(settings: ServerSettings, state: str) -> int:
    """Ask the server these settings describe, on this host, whether it is live or ready:
    the HTTP health endpoints (over TLS when the server uses it; no credentials needed).
    With the HTTP listener off, `live` is a connection to the gRPC port."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    if settings.http_port is None:
        if state == "ready":
            print("tlserve-server: `probe ready` needs the HTTP listener (TLSERVE_HTTP_PORT)")
            return 2
        try:
            socket.create_connection((host, settings.port), timeout=5).close()
        except OSError as exc:
            print(f"tlserve-server: not live: gRPC port {host}:{settings.port}: {exc}")
            return 1
        return 0
    secure = settings.tls_cert_file is not None
    # The server takes no connection without a client certificate.
    needs_certificate = (
        secure and settings.tls_client_ca_file is not None and settings.tls_client_auth == "require"
    )
    context = None
    if secure:
        # Its own process on loopback: the certificate names the Service, not 127.0.0.1.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if needs_certificate:
            cert = settings.probe_cert_file or settings.tls_cert_file
            key = settings.probe_key_file or settings.tls_key_file
            try:
                context.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as exc:
                print(f"tlserve-server: cannot present {cert} as the probe's certificate: {exc}")
                return 2
    url = f"{'https' if secure else 'http'}://{host_for_url(host)}:{settings.http_port}"
    url += READY_PATH if state == "ready" else LIVE_PATH
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as reply:
            reply.read()
    except urllib.error.HTTPError as error:
        print(f"tlserve-server: not {state}: {url} answered {error.code}")
        return 1
    except OSError as exc:
        print(f"tlserve-server: not {state}: {url}: {getattr(exc, 'reason', exc)}")
        if needs_certificate and not settings.probe_cert_file:
            print(
                "tlserve-server: the server requires client certificates; set "
                "TLSERVE_PROBE_CERT_FILE and TLSERVE_PROBE_KEY_FILE to one it accepts"
            )
        return 1
    return 0


def host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _move_data(args: argparse.Namespace, settings: ServerSettings) -> int:
    with needs_extra("server", "tlserve-server"):
        from tlserve.server.dataset import export_data, import_data  # noqa: PLC0415
        from tlserve.server.imaging import ImageLimits  # noqa: PLC0415
        from tlserve.server.store import open_store  # noqa: PLC0415

    store = open_store(settings.resolved_store_url)
    try:
        if args.command == "export-data":
            count = export_data(store, args.target)
            print(f"exported {count} labeled samples to {args.target}")
            return 0
        limits = ImageLimits(settings.max_image_pixels, settings.max_image_side)
        report = import_data(store, args.source, limits)
    finally:
        store.close()
    print(
        f"imported {report.accepted} samples ({report.duplicates} already present, "
        f"{len(report.rejected)} rejected)"
    )
    for where, reason in report.rejected:
        print(f"  {where}: {reason}", file=sys.stderr)
    return 1 if report.rejected else 0


if __name__ == "__main__":
    raise SystemExit(main())
