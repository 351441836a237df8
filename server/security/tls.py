"""TLS for both listeners from one set of PEM files, re-read when they change.

gRPC asks for its certificates on every new connection (`dynamic_ssl_server_credentials`);
the HTTP listener swaps in a fresh `ssl.SSLContext` during the handshake (`sni_callback`,
which OpenSSL calls with or without SNI). So a rotated Secret takes effect for new
connections within `check_seconds`, with no restart; established ones keep theirs.
New files are validated (key matches certificate, CA parses) before use: a half-written
rotation is logged and the previous material stays.
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import grpc

from tlserve.server.security.errors import SecurityConfigError
from tlserve.server.security.validity import NotACertificate, first_certificate_validity
from tlserve.server.security.watched import WatchedFile

log = logging.getLogger(__name__)


class TlsConfigError(SecurityConfigError):
    """The configured certificate, key or client CA cannot be used."""


class ClientAuth(StrEnum):
    """With a client CA: `require` refuses connections without a valid client certificate;
    `optional` verifies one when presented (HTTP only: gRPC Python cannot ask for an
    optional certificate, so there it verifies none and callers use tokens)."""

    REQUIRE = "require"
    OPTIONAL = "optional"


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None


class TlsFiles:
    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        client_ca_file: Path | None = None,
        client_auth: ClientAuth = ClientAuth.REQUIRE,
        check_seconds: float = 10.0,
    ) -> None:
        self.client_auth = client_auth
        self._files = [WatchedFile(cert_file, check_seconds), WatchedFile(key_file, check_seconds)]
        if client_ca_file is not None:
            self._files.append(WatchedFile(client_ca_file, check_seconds))
        self._lock = threading.Lock()
        self.material = self._read()
        self._context = self._ssl_context(self.material)
        self._warn_if_invalid(self.material)
        self.generation = 0

    @property
    def mutual(self) -> bool:
        return self.material.client_ca is not None

    def refresh(self) -> bool:
        """Load changed files if they are usable; True when new material took effect."""
        with self._lock:
            changed = [f.changed() for f in self._files]  # every file, not just the first
            if not any(changed):
                return False
            candidate = self._read()
            try:
                context = self._ssl_context(candidate)
            except TlsConfigError as exc:
                log.error("TLS files changed but cannot be used; keeping the previous: %s", exc)
                return False
            self.material, self._context = candidate, context
            self.generation += 1
            log.info("TLS certificate reloaded (generation %d)", self.generation)
            self._warn_if_invalid(candidate)
            return True

    def _warn_if_invalid(self, material: TlsMaterial) -> None:
        """A certificate clients will refuse (expired, not yet valid) or soon will: said
        at start and on every reload, since the server still serves it."""
        path = self._files[0].path
        try:
            validity = first_certificate_validity(material.certificate_chain)
        except NotACertificate as exc:
            log.warning("cannot read the validity of the TLS certificate %s: %s", path, exc)
            return
        problem = validity.problem(datetime.datetime.now(datetime.UTC))
        if problem is not None:
            log.warning(
                "the TLS certificate %s %s: clients verifying it refuse to connect once it is "
                "not valid; replace the file (it is re-read without a restart)",
                path,
                problem,
            )

    def ssl_context(self) -> ssl.SSLContext:
        """For the HTTP listener: each handshake switches to the newest context."""
        base = self._ssl_context(self.material)

        def latest(connection: Any, server_name: str | None, _: ssl.SSLContext) -> None:
            self.refresh()
            connection.context = self._context

        base.sni_callback = latest
        return base

    def grpc_credentials(self) -> grpc.ServerCredentials:
        given = [self.generation]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            self.refresh()
            if given[0] == self.generation:
                return None  # unchanged: gRPC keeps what it has
            given[0] = self.generation
            return _grpc_configuration(self.material)

        return grpc.dynamic_ssl_server_credentials(
            _grpc_configuration(self.material),
            fetch,
            require_client_authentication=self.mutual and self.client_auth == ClientAuth.REQUIRE,
        )

    def _read(self) -> TlsMaterial:
        contents = [f.content for f in self._files]
        return TlsMaterial(contents[0], contents[1], contents[2] if len(contents) > 2 else None)

    def _ssl_context(self, material: TlsMaterial) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # load_cert_chain reads files only: the bytes go through a private temporary
        # folder, so what is validated is exactly what will be served.
        with tempfile.TemporaryDirectory(prefix="tlserve-tls-") as folder:
            chain, key = Path(folder, "chain.pem"), Path(folder, "key.pem")
            for path, data in ((chain, material.certificate_chain), (key, material.private_key)):
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(data)
            try:
                context.load_cert_chain(chain, key)
            except (ssl.SSLError, ValueError) as exc:
                raise TlsConfigError(
                    f"the certificate ({self._files[0].path}) and key ({self._files[1].path}) "
                    f"are not a usable PEM pair: {exc}"
                ) from None
        if material.client_ca is not None:
            try:
                context.load_verify_locations(cadata=material.client_ca.decode("ascii"))
            except (ssl.SSLError, ValueError, UnicodeDecodeError) as exc:
                raise TlsConfigError(
                    f"the client CA ({self._files[2].path}) is not PEM certificates: {exc}"
                ) from None
            context.verify_mode = (
                ssl.CERT_REQUIRED if self.client_auth == ClientAuth.REQUIRE else ssl.CERT_OPTIONAL
            )
        return context


def _grpc_configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.private_key, material.certificate_chain)], material.client_ca
    )


def certificate_names(peer: dict[str, Any] | None) -> Sequence[str]:
    """CN, then DNS/URI/email SANs, of a verified peer certificate (ssl.getpeercert())."""
    if not peer:
        return ()
    names = [value for rdn in peer.get("subject", ()) for key, value in rdn if key == "commonName"]
    names += [
        value for kind, value in peer.get("subjectAltName", ()) if kind in ("DNS", "URI", "email")
    ]
    return tuple(names)
