"""`tlserve-server`: run the gRPC prediction server, or move its data set.

    tlserve-server [serve] [--config tlserve.toml] [--port N] [--data-dir DIR]
    tlserve-server export-data TARGET     (a folder, or a .tar / .tar.gz)
    tlserve-server import-data SOURCE     (a folder or tar written by export-data)

Settings come from TLSERVE_* environment variables and an optional TOML file;
flags override both. SIGTERM/SIGINT drain in-flight requests before exiting.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from tlserve.server.app import TlserveServer
from tlserve.server.dataset import export_data, import_data
from tlserve.server.imaging import ImageLimits
from tlserve.server.security.errors import SecurityConfigError
from tlserve.server.settings import ServerSettings
from tlserve.server.store import open_store


def _parser() -> argparse.ArgumentParser:
    # The options may come before or after the command; SUPPRESS keeps a subcommand's
    # parser from resetting what was given before it.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--config", type=Path, help="TOML settings file")
    common.add_argument("--port", type=int, help="gRPC port (TLSERVE_PORT)")
    common.add_argument("--metrics-port", type=int, help="metrics port (TLSERVE_METRICS_PORT)")
    common.add_argument("--data-dir", type=Path, help="data directory (TLSERVE_DATA_DIR)")
    common.add_argument("--registry-dir", type=Path, help="registry (TLSERVE_REGISTRY_DIR)")
    parser = argparse.ArgumentParser(
        prog="tlserve-server", description=__doc__.split("\n")[0], parents=[common]
    )
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
    server = TlserveServer(settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
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
    try:
        asyncio.run(serve(settings))
    except SecurityConfigError as exc:
        print(f"tlserve-server: {exc}", file=sys.stderr)
        return 2
    return 0


def _move_data(args: argparse.Namespace, settings: ServerSettings) -> int:
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
