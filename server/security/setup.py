"""The trust boundary as the settings describe it, and the refusal to expose a server
that has none: any non-loopback address needs TLS and credentials, or `insecure`."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from tlserve.server.security.access import AccessControl
from tlserve.server.security.errors import SecurityConfigError
from tlserve.server.security.quotas import Action, Rate, RateLimits
from tlserve.server.security.roles import Role
from tlserve.server.security.tls import ClientAuth, TlsFiles
from tlserve.server.security.tokens import TokenTable, tokens_from_list
from tlserve.server.settings import ServerSettings

log = logging.getLogger(__name__)


class InsecureExposure(SecurityConfigError):
    """The settings would serve a network without TLS or credentials."""


@dataclass(frozen=True)
class Security:
    access: AccessControl
    limits: RateLimits
    tls: TlsFiles | None
    has_credentials: bool  # tokens, or client certificates required


def build_security(settings: ServerSettings) -> Security:
    """AccessControl, rate limits and TLS from the settings; InsecureExposure (with what to
    set) when a non-loopback listener would lack either TLS or credentials."""
    tokens = TokenTable(
        [
            *tokens_from_list(settings.predict_tokens, Role.PREDICT, "TLSERVE_PREDICT_TOKENS"),
            *tokens_from_list(settings.label_tokens, Role.LABEL, "TLSERVE_LABEL_TOKENS"),
            *tokens_from_list(settings.admin_tokens, Role.ADMIN, "TLSERVE_ADMIN_TOKENS"),
        ],
        settings.tokens_file,
        settings.credentials_check_seconds,
    )
    tls = _tls(settings)
    mutual = tls is not None and tls.mutual
    has_credentials = bool(tokens) or mutual
    if settings.anonymous_role == "auto":
        anonymous = Role.NONE if has_credentials else Role.LABEL
    else:
        anonymous = Role.parse(settings.anonymous_role, "TLSERVE_ANONYMOUS_ROLE")
    access = AccessControl(
        tokens,
        anonymous_role=anonymous,
        certificate_roles=_certificate_roles(settings.client_cert_roles) if mutual else {},
        certificate_default_role=(
            Role.parse(settings.client_cert_default_role) if mutual else Role.NONE
        ),
    )
    _check_exposure(settings, tls is not None, has_credentials, anonymous)
    limits = RateLimits(
        {
            Action.PREDICT: Rate(settings.predict_rate, settings.predict_burst),
            Action.FEEDBACK: Rate(settings.feedback_rate, settings.feedback_burst),
            Action.TRAINING: Rate(settings.training_rate, settings.training_burst),
            Action.SUGGEST: Rate(settings.suggest_rate, settings.suggest_burst),
        }
    )
    return Security(access, limits, tls, has_credentials)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _tls(settings: ServerSettings) -> TlsFiles | None:
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert is None and key is None:
        if settings.tls_client_ca_file is not None:
            raise SecurityConfigError(
                "TLSERVE_TLS_CLIENT_CA_FILE needs TLSERVE_TLS_CERT_FILE and TLSERVE_TLS_KEY_FILE"
            )
        return None
    if cert is None or key is None:
        raise SecurityConfigError("TLS needs both TLSERVE_TLS_CERT_FILE and TLSERVE_TLS_KEY_FILE")
    return TlsFiles(
        cert,
        key,
        settings.tls_client_ca_file,
        ClientAuth(settings.tls_client_auth),
        settings.credentials_check_seconds,
    )


def _certificate_roles(value: str) -> dict[str, Role]:
    roles = {}
    for entry in filter(None, (e.strip() for e in value.split(","))):
        name, separator, role = entry.rpartition("=")
        if not separator or not name:
            raise SecurityConfigError(
                f"TLSERVE_CLIENT_CERT_ROLES entry {entry!r} must be `<certificate name>=<role>`"
            )
        roles[name.strip()] = Role.parse(role, "TLSERVE_CLIENT_CERT_ROLES")
    return roles


def exposed_hosts(settings: ServerSettings) -> list[str]:
    """The non-loopback addresses the API listeners (gRPC, and HTTP when on) bind."""
    hosts = {settings.host}
    if settings.http_port is not None:
        hosts.add(settings.http_host or settings.host)
    return sorted(host for host in hosts if not is_loopback(host))


def _check_exposure(
    settings: ServerSettings, tls: bool, credentials: bool, anonymous: Role
) -> None:
    metrics_host = settings.metrics_host or settings.host
    if settings.metrics_port is not None and not is_loopback(metrics_host):
        log.warning(
            "metrics on %s:%s are plaintext and open to anyone who can reach them (model "
            "names, versions, request and label counts); keep that address inside the "
            "cluster, or set TLSERVE_METRICS_HOST=127.0.0.1",
            metrics_host,
            settings.metrics_port,
        )
    exposed = exposed_hosts(settings)
    if not exposed:
        return
    missing = [
        what
        for what, present in (
            ("TLS (TLSERVE_TLS_CERT_FILE, TLSERVE_TLS_KEY_FILE)", tls),
            (
                "credentials (TLSERVE_PREDICT_TOKENS / _LABEL_TOKENS / _ADMIN_TOKENS, "
                "TLSERVE_TOKENS_FILE, or TLSERVE_TLS_CLIENT_CA_FILE for mutual TLS)",
                credentials,
            ),
            (
                f"an anonymous role of at most predict (TLSERVE_ANONYMOUS_ROLE is "
                f"{anonymous.label}: anyone could label or administer)",
                anonymous <= Role.PREDICT,
            ),
        )
        if not present
    ]
    if not missing:
        return
    if settings.insecure:
        log.warning(
            "INSECURE: serving on %s without %s because TLSERVE_INSECURE is set; anyone who "
            "can reach this address can read and change what this server holds",
            ", ".join(exposed),
            " and ".join(missing),
        )
        return
    raise InsecureExposure(
        f"refusing to serve on {', '.join(exposed)} without {' and '.join(missing)}. "
        "Set them, bind to 127.0.0.1, or set TLSERVE_INSECURE=true on a trusted network"
    )
