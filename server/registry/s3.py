"""The registry on S3-compatible object storage (AWS S3, MinIO, GCS's XML API), via boto3.

Publication stays atomic without a rename: a group's objects are written first, then
its marker `<prefix>/<name>.published` last, with `If-None-Match: *` so only one writer
publishes a name. Readers list and read only groups whose marker exists; a crashed
publication leaves unmarked objects that nobody reads and `remove_partials` clears.

CURRENT is one object replaced with a conditional write (`If-Match: <ETag>`, or
`If-None-Match: *` when unset): two writers cannot both win a compare-and-set. Servers
poll it with a conditional GET (`If-None-Match`), which costs a 304 and no body while it
is unchanged. Published files never change, so reads through `read_content` are cached
on local disk by their sha256 (verified when written and when read).

Credentials and region come from boto3's standard provider chain (environment, shared
config, web identity / IRSA, instance metadata); the endpoint from `endpoint_url` or
`AWS_ENDPOINT_URL`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from tlserve.server.fsutil import atomic_write_bytes
from tlserve.server.registry.storage import (
    MissingObject,
    PointerChanged,
    RegistryStorage,
    StorageError,
    WriteRefused,
    check_key,
)

MARKER_SUFFIX = ".published"
# Unmarked objects younger than this may be a publication in progress, not a crash.
PARTIAL_AGE_SECONDS = 3600.0


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket[/prefix]` -> (bucket, prefix without slashes)."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"an object-storage registry is s3://bucket[/prefix], got {url!r}")
    prefix = parsed.path.strip("/")
    if prefix:
        check_key(prefix)
    return parsed.netloc, prefix


class S3Storage(RegistryStorage):
    def __init__(
        self,
        url: str,
        *,
        cache_dir: Path | None = None,
        endpoint_url: str | None = None,
        client: Any = None,
        partial_age_seconds: float = PARTIAL_AGE_SECONDS,
    ) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = url
        self.cache_dir = cache_dir
        self.partial_age_seconds = partial_age_seconds
        if client is None:
            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                config=Config(retries={"mode": "standard", "max_attempts": 5}),
            )
        self.client = client
        self.endpoint = endpoint_url or getattr(client.meta, "endpoint_url", "")
        self._lock = threading.Lock()
        self._published: set[str] = set()  # group prefixes seen marked (markers never change)
        self._pointers: dict[str, tuple[str, bytes]] = {}  # name -> (ETag, value)

    def describe(self) -> str:
        return f"object storage {self.url} (endpoint {self.endpoint})"

    # ---- keys ----------------------------------------------------------------

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _group_of(self, key: str) -> str | None:
        segments = check_key(key)
        return "/".join(segments[:2]) if len(segments) > 2 else None

    def _is_published(self, group: str) -> bool:
        with self._lock:
            if group in self._published:
                return True
        if not self._head(self._key(group) + MARKER_SUFFIX):
            return False
        with self._lock:
            self._published.add(group)
        return True

    # ---- requests --------------------------------------------------------------

    def _head(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _status(error) == 404:
                return False
            raise StorageError(f"HEAD {key} failed: {error}") from None
        return True

    def _get(self, key: str) -> bytes:
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _error_code(error) in ("NoSuchKey", "404"):
                raise MissingObject(key) from None
            raise StorageError(f"GET {key} failed: {error}") from None
        return bytes(reply["Body"].read())

    def _list(self, prefix: str, delimiter: str | None = "/") -> list[dict[str, Any]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, **({"Delimiter": delimiter} if delimiter else {})
        )
        return [entry for page in pages for entry in page.get("Contents", [])]

    # ---- RegistryStorage -------------------------------------------------------

    def read(self, key: str) -> bytes:
        group = self._group_of(key)
        if group is not None and not self._is_published(group):
            raise MissingObject(key)
        return self._get(self._key(key))

    def read_content(self, key: str, sha256: str) -> bytes:
        cached = self._cached(sha256)
        if cached is not None:
            return cached
        data = self.read(key)
        if self.cache_dir is not None and hashlib.sha256(data).hexdigest() == sha256:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.cache_dir / sha256, data)
        return data

    def _cached(self, sha256: str) -> bytes | None:
        if self.cache_dir is None or not all(c in "0123456789abcdef" for c in sha256):
            return None
        path = self.cache_dir / sha256
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if hashlib.sha256(data).hexdigest() != sha256:
            path.unlink(missing_ok=True)  # damaged on disk: fetch again
            return None
        return data

    def exists(self, key: str) -> bool:
        group = self._group_of(key)
        if group is not None and not self._is_published(group):
            return False
        return self._head(self._key(key))

    def list(self, prefix: str) -> list[str]:
        folder = self._key(prefix) + "/"
        names = []
        for entry in self._list(folder):
            name = entry["Key"][len(folder) :]
            if name.endswith(MARKER_SUFFIX):
                names.append(name[: -len(MARKER_SUFFIX)])
        return names

    def publish(self, prefix: str, files: Mapping[str, bytes]) -> bool:
        check_key(prefix)
        marker = self._key(prefix) + MARKER_SUFFIX
        if self._head(marker):
            return False
        for relative, data in files.items():
            check_key(relative)
            with self._writing():
                self.client.put_object(
                    Bucket=self.bucket, Key=f"{self._key(prefix)}/{relative}", Body=data
                )
        document = {
            "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
        }
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=marker,
                Body=json.dumps(document, sort_keys=True).encode(),
                IfNoneMatch="*",
            )
        except ClientError as error:
            if _status(error) in (409, 412):
                return False
            raise self._write_failed(error, f"publishing {prefix}") from None
        with self._lock:
            self._published.add(prefix)
        return True

    def delete(self, prefix: str) -> None:
        check_key(prefix)
        # The marker goes first: from then on readers no longer see the group.
        with self._writing():
            self.client.delete_object(Bucket=self.bucket, Key=self._key(prefix) + MARKER_SUFFIX)
        with self._lock:
            self._published.discard(prefix)
        self._delete_all(self._key(prefix) + "/")

    def _delete_all(self, folder: str) -> None:
        keys = [entry["Key"] for entry in self._list(folder, delimiter=None)]
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]], "Quiet": True},
            )

    def read_pointer(self, name: str) -> bytes | None:
        return self._read_pointer(name)[1]

    def _read_pointer(self, name: str) -> tuple[str | None, bytes | None]:
        """(ETag, value), by a conditional GET against what was read last."""
        key = self._key(name)
        with self._lock:
            known = self._pointers.get(name)
        extra = {"IfNoneMatch": known[0]} if known else {}
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=key, **extra)
        except ClientError as error:
            if _status(error) == 304 and known:
                return known
            if _error_code(error) in ("NoSuchKey", "404"):
                with self._lock:
                    self._pointers.pop(name, None)
                return None, None
            raise StorageError(f"GET {key} failed: {error}") from None
        value = bytes(reply["Body"].read())
        with self._lock:
            self._pointers[name] = (reply["ETag"], value)
        return reply["ETag"], value

    def compare_and_set_pointer(self, name: str, expected: bytes | None, value: bytes) -> None:
        (segment,) = check_key(name)
        etag, current = self._read_pointer(segment)
        if current != expected:
            raise PointerChanged(f"{segment} changed since it was read")
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            reply = self.client.put_object(
                Bucket=self.bucket, Key=self._key(segment), Body=value, **condition
            )
        except ClientError as error:
            if _status(error) in (409, 412):
                raise PointerChanged(f"{segment} changed while it was being set") from None
            raise self._write_failed(error, f"setting {segment}") from None
        with self._lock:
            self._pointers[segment] = (reply["ETag"], value)

    def _write_failed(self, error: ClientError, what: str) -> StorageError:
        if _status(error) == 403:
            return WriteRefused(
                f"{self.describe()} refused {what} ({_error_code(error)}): the credentials "
                "need s3:PutObject and s3:DeleteObject on the registry's prefix"
            )
        return StorageError(f"{what} failed: {error}")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except ClientError as error:
            raise self._write_failed(error, "a write") from None

    def remove_partials(self) -> list[str]:
        """Groups with objects but no marker, older than `partial_age_seconds` (an hour: a
        crashed publisher's, not one still writing)."""
        removed = []
        root = f"{self.prefix}/" if self.prefix else ""
        for kind in ("versions", "backbones"):
            folder = f"{root}{kind}/"
            entries = self._list(folder, delimiter=None)
            marked = {
                e["Key"][len(folder) : -len(MARKER_SUFFIX)]
                for e in entries
                if e["Key"].endswith(MARKER_SUFFIX)
            }
            newest: dict[str, float] = {}
            for entry in entries:
                name = entry["Key"][len(folder) :].split("/", 1)[0]
                if entry["Key"].endswith(MARKER_SUFFIX) or name in marked:
                    continue
                modified = entry["LastModified"].timestamp()
                newest[name] = max(newest.get(name, 0.0), modified)
            for name, modified in newest.items():
                if time.time() - modified >= self.partial_age_seconds:
                    self._delete_all(f"{folder}{name}/")
                    removed.append(f"{kind}/{name}")
        return removed


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
