"""What every tlserve command line shares: one-line errors, --version, and a hint
naming the extra to install when an entry point's dependencies are missing. Lives in
the client package because every install has it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import NoReturn


def version_string() -> str:
    try:
        return f"tlserve {metadata.version('tlserve')}"
    except metadata.PackageNotFoundError:
        return "tlserve (not installed as a distribution)"


class OneLineErrors(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (`prog: error: ...`), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@contextmanager
def needs_extra(extra: str, command: str) -> Iterator[None]:
    """Exit 2 with the install command when a module of `extra` is missing."""
    try:
        yield
    except ModuleNotFoundError as exc:
        print(
            f"{command}: error: this install lacks {exc.name!r}, which {command} needs: "
            f"pip install 'tlserve[{extra}]'",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
