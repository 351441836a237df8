"""`tlserve-server`: run the gRPC prediction server.

    tlserve-server [serve] [--config tlserve.toml] [--port N] [--data-dir DIR]

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

from server.app import TlserveServer
from server.settings import ServerSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlserve-server", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the server (the default)")
    for target in (parser, serve):
        target.add_argument("--config", type=Path, help="TOML settings file")
        target.add_argument("--port", type=int, help="gRPC port (TLSERVE_PORT)")
        target.add_argument("--metrics-port", type=int, help="metrics port (TLSERVE_METRICS_PORT)")
        target.add_argument("--data-dir", type=Path, help="data directory (TLSERVE_DATA_DIR)")
        target.add_argument("--registry-dir", type=Path, help="registry (TLSERVE_REGISTRY_DIR)")
    return parser


def _settings(args: argparse.Namespace) -> ServerSettings:
    overrides = {
        name: value
        for name, value in {
            "port": args.port,
            "metrics_port": args.metrics_port,
            "data_dir": args.data_dir,
            "registry_dir": args.registry_dir,
        }.items()
        if value is not None
    }
    return ServerSettings.load(args.config, **overrides)


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
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
