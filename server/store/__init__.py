"""Feedback stores: SQLite (embedded default) and PostgreSQL (scale-out), one interface."""

from __future__ import annotations

from pathlib import Path

from tlserve.server.store.base import FeedbackStore
from tlserve.server.store.postgres import PostgresFeedbackStore
from tlserve.server.store.sqlite import SqliteFeedbackStore


def open_store(url: str) -> FeedbackStore:
    """`sqlite:///absolute/path.sqlite3` or `postgresql://user@host:port/db`."""
    if url.startswith("sqlite:///"):
        return SqliteFeedbackStore(Path(url.removeprefix("sqlite://")))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresFeedbackStore(url)
    raise ValueError(f"unsupported store URL {url!r}; use sqlite:///PATH or postgresql://...")
