"""Reading an HTTP request's body within one budget per request.

aiohttp caps `request.read()` but not a multipart body, whose parts it reads one by one
with no total (24 parts of 60 MB took a server from 128 MB to 1.6 GB before it
answered), and it inflates a compressed body on the event loop, where the rest of a
refused 1 MB gzip body that would inflate to 1 GB stalled the loop for seconds while
aiohttp drained it. So the server takes bodies as sent (`auto_decompress=False`) and
every route reads through `BodyReader`, which:

- holds the whole request to `max_bytes`, counted after Content-Encoding is undone;
  a Content-Length already past it is refused unread;
- inflates gzip and deflate itself, at most `_CHUNK` bytes per step, so no step holds
  the loop for more than about a millisecond and a bomb stops at the limit;
- counts multipart parts, and takes multipart bodies and parts uncompressed (browsers
  and HTTP libraries never compress them; the images inside are compressed already);
- gives the body `max_seconds` to arrive (a slow sender holds a connection and a
  buffer).

Chunks are kept in a list and joined once, so a body at the limit costs about twice its
size, not a bytearray's doubling. A refused body's unread rest is drained by aiohttp as
bytes on the wire, never inflated.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from tlserve.server.errors import InvalidInput, TimedOut, TooLarge, quoted

_CHUNK = 256 * 1024
_IDENTITY = ("", "identity")
_INFLATED = ("gzip", "x-gzip", "deflate")
# A part's Content-Transfer-Encoding that aiohttp decodes; each only shrinks the data.
_TRANSFER_ENCODINGS = ("", "binary", "8bit", "7bit", "base64", "quoted-printable")


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_bytes: int
    """The whole body, after Content-Encoding is undone (`max_message_bytes`)."""
    max_seconds: float
    """How long the whole body may take to arrive (`max_body_seconds`)."""


class BodyReader:
    """One request's body, read once within `limits`."""

    def __init__(self, request: web.Request, limits: BodyLimits) -> None:
        self.request = request
        self.limits = limits
        self._read = 0

    async def body(self) -> bytes:
        """The whole body, inflated when its Content-Encoding says so (empty: b"")."""
        encoding = self._content_encoding()
        if encoding in _IDENTITY:
            self._refuse_declared_length()
        inflater = None if encoding in _IDENTITY else _Inflater(encoding)
        chunks: list[bytes] = []
        async with self._in_time():
            while sent := await self.request.content.read(_CHUNK):
                if inflater is None:
                    self._count(len(sent))
                    chunks.append(sent)
                    continue
                for inflated in inflater.feed(sent):
                    self._count(len(inflated))
                    chunks.append(inflated)
                    await asyncio.sleep(0)  # each step is short; let the loop run between
        if inflater is not None:
            inflater.finish()
        return b"".join(chunks)

    async def parts(self, max_parts: int) -> list[tuple[str, bytes]]:
        """(name, data) of each part of a multipart/form-data body, at most `max_parts`."""
        encoding = self._content_encoding()
        if encoding not in _IDENTITY:
            raise InvalidInput(
                f"a multipart body is accepted uncompressed, not with Content-Encoding "
                f"{quoted(encoding, 20)} (the images inside are compressed already)"
            )
        self._refuse_declared_length()
        try:
            async with self._in_time():
                return await self._parts(max_parts)
        except (ValueError, AssertionError, HttpProcessingError) as exc:
            # No boundary, a bad part header, a body cut short.
            raise InvalidInput(
                f"the multipart/form-data body is malformed ({quoted(str(exc), 120)}); send "
                "parts separated by the boundary its Content-Type names"
            ) from None

    async def _parts(self, max_parts: int) -> list[tuple[str, bytes]]:
        fields: list[tuple[str, bytes]] = []
        reader = await self.request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                raise InvalidInput("nested multipart bodies are not accepted")
            if len(fields) == max_parts:
                raise TooLarge(
                    f"the multipart body has more than {max_parts} parts; at most {max_parts} "
                    "are accepted here"
                )
            fields.append((part.name or "", await self._part(part)))
        return fields

    async def _part(self, part: BodyPartReader) -> bytes:
        encoding = part.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
        if encoding not in _IDENTITY:
            raise InvalidInput(
                f"multipart part {quoted(part.name or '', 40)} has Content-Encoding "
                f"{quoted(encoding, 20)}; parts are accepted uncompressed (compress the "
                "whole body with the request's Content-Encoding instead)"
            )
        transfer = part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING, "").strip().lower()
        if transfer not in _TRANSFER_ENCODINGS:
            raise InvalidInput(
                f"multipart part {quoted(part.name or '', 40)} has Content-Transfer-Encoding "
                f"{quoted(transfer, 20)}; accepted: binary, 8bit, 7bit, base64, quoted-printable"
            )
        chunks: list[bytes] = []
        while chunk := await part.read_chunk(_CHUNK):
            self._count(len(chunk))
            chunks.append(bytes(chunk))
        data = b"".join(chunks)
        try:
            if transfer == "base64":
                return base64.b64decode(data)
            if transfer == "quoted-printable":
                return binascii.a2b_qp(data)
        except (ValueError, binascii.Error):
            raise InvalidInput(
                f"multipart part {quoted(part.name or '', 40)} is not valid {transfer}"
            ) from None
        return data

    def _content_encoding(self) -> str:
        encoding = self.request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
        if encoding not in _IDENTITY and encoding not in _INFLATED:
            raise InvalidInput(
                f"Content-Encoding {quoted(encoding, 20)} is not accepted; send the body "
                "as it is, or with gzip or deflate"
            )
        return encoding

    def _refuse_declared_length(self) -> None:
        """A body whose Content-Length already says it is too big is refused unread."""
        declared = self.request.content_length
        if declared is not None and declared > self.limits.max_bytes:
            raise self._too_large(declared)

    def _count(self, size: int) -> None:
        self._read += size
        if self._read > self.limits.max_bytes:
            raise self._too_large(None)

    def _too_large(self, declared: int | None) -> TooLarge:
        size = f"is {declared} bytes" if declared is not None else "is larger"
        return TooLarge(
            f"the request body {size}; at most {self.limits.max_bytes} bytes are accepted "
            "(after Content-Encoding; max_message_bytes). Send large batches as several "
            "requests"
        )

    @asynccontextmanager
    async def _in_time(self) -> AsyncIterator[None]:
        seconds = self.limits.max_seconds
        try:
            async with asyncio.timeout(seconds if math.isfinite(seconds) else None):
                yield
        except TimeoutError:
            raise TimedOut(
                f"the request body did not arrive within {seconds:g} s (max_body_seconds); "
                "send it at once"
            ) from None


class _Inflater:
    """gzip or deflate undone in steps of at most `_CHUNK` bytes of output."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._zlib: zlib._Decompress | None = None

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._zlib is None:
            self._zlib = zlib.decompressobj(self._window_bits(data[0]))
        pending = data
        while pending:
            try:
                out = self._zlib.decompress(pending, _CHUNK)
            except zlib.error:
                raise self._not_encoded() from None
            pending = self._zlib.unconsumed_tail
            if out:
                yield out
            if self._zlib.eof:
                return

    def finish(self) -> None:
        if self._zlib is None or not self._zlib.eof:
            raise self._not_encoded()

    def _window_bits(self, first: int) -> int:
        if self.encoding != "deflate":
            return 16 + zlib.MAX_WBITS
        # RFC 9110's deflate is zlib-wrapped; some clients send raw deflate (no header).
        return zlib.MAX_WBITS if first & 0x0F == 8 else -zlib.MAX_WBITS

    def _not_encoded(self) -> InvalidInput:
        return InvalidInput(
            f"the request body is not valid {self.encoding} data, or is cut short; send "
            "it as its Content-Type and Content-Encoding say"
        )
