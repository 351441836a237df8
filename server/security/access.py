"""Roles, principals and the one decision every use case asks for: may this caller do it?

Roles nest: `admin` may do everything `label` may, and `label` everything `predict`
may. A caller is identified by a bearer token, else by a verified client certificate,
else is anonymous; anonymous callers get `anonymous_role` (by default `label` when the
server has no credentials configured at all, which only a loopback or explicitly
insecure server allows, and nothing otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tlserve.server.errors import PermissionDenied, Unauthenticated
from tlserve.server.security.roles import Role
from tlserve.server.security.tokens import TokenTable

ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as recorded on their feedback: `anonymous`, `token:<name>` or
    `cert:<name>`."""

    name: str
    role: Role
    # The models it may use; None: every model (a token scoped in the tokens file, e.g.
    # `label@digits`, may use only those).
    models: frozenset[str] | None = None

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass(frozen=True, slots=True)
class Presented:
    """What a caller presented, whatever the protocol: the Authorization value as sent,
    and the names (CN, then SANs) of a client certificate the TLS layer verified."""

    authorization: str | None = None
    certificate_names: Sequence[str] = ()
    # More than one Authorization value was sent: refused, since protocols disagree on
    # which one counts (gRPC's last, HTTP's first).
    repeated_authorization: bool = False


class AccessControl:
    def __init__(
        self,
        tokens: TokenTable,
        *,
        anonymous_role: Role,
        certificate_roles: Mapping[str, Role] | None = None,
        certificate_default_role: Role = Role.NONE,
    ) -> None:
        self.tokens = tokens
        self.anonymous_role = anonymous_role
        self.certificate_roles = dict(certificate_roles or {})
        self.certificate_default_role = certificate_default_role

    def authenticate(self, presented: Presented) -> Principal:
        """The caller's principal; Unauthenticated for a malformed or unknown token."""
        if presented.repeated_authorization:
            raise Unauthenticated(
                "send one authorization header (or metadata entry); this request has several"
            )
        if presented.authorization is not None:
            return self._token_principal(presented.authorization)
        if presented.certificate_names:
            return self._certificate_principal(presented.certificate_names)
        return Principal(ANONYMOUS, self.anonymous_role)

    def require(self, presented: Presented, role: Role) -> Principal:
        """The caller's principal if its role allows `role`; else Unauthenticated (no or a
        bad credential) or PermissionDenied (a valid credential of a lesser role)."""
        principal = self.authenticate(presented)
        if principal.role >= role:
            return principal
        if principal.name != ANONYMOUS:
            raise PermissionDenied(
                f"{principal.name} has the `{principal.role.label}` role; this call needs "
                f"`{role.label}`"
            )
        if role == Role.ADMIN and not self._admin_configured():
            raise Unauthenticated(
                "admin calls are refused: this server has no admin credential; set "
                "TLSERVE_ADMIN_TOKENS or add an `admin` line to TLSERVE_TOKENS_FILE"
            )
        raise Unauthenticated(
            f"this call needs a credential with the `{role.label}` role: send "
            "`authorization: Bearer <token>` or a client certificate the server trusts"
        )

    def identify(self, presented: Presented) -> Principal:
        """The caller's principal if it may call anything at all; Unauthenticated for an
        anonymous caller where anonymous callers have no role."""
        principal = self.authenticate(presented)
        if principal.role == Role.NONE and principal.name == ANONYMOUS:
            raise Unauthenticated(
                "this call needs a credential: send `authorization: Bearer <token>` or a "
                "client certificate the server trusts"
            )
        return principal

    def check_model(self, principal: Principal, model: str) -> None:
        """PermissionDenied unless the principal's credential covers `model`."""
        if not principal.may_use(model):
            allowed = ", ".join(sorted(principal.models or ()))
            raise PermissionDenied(f"{principal.name} may use the models {allowed}, not {model!r}")

    def _admin_configured(self) -> bool:
        return self.tokens.has_role(Role.ADMIN) or Role.ADMIN in (
            self.certificate_default_role,
            *self.certificate_roles.values(),
        )

    def _token_principal(self, authorization: str) -> Principal:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the authorization header must be `Bearer <token>`")
        if not (token.isascii() and token.strip().isprintable()):
            raise Unauthenticated("the bearer token must be printable ASCII")
        entry = self.tokens.lookup(token.strip())
        if entry is None:
            raise Unauthenticated("the bearer token is not valid on this server")
        return Principal(f"token:{entry.name}", entry.role, entry.models)

    def _certificate_principal(self, names: Sequence[str]) -> Principal:
        for name in names:
            if name in self.certificate_roles:
                return Principal(f"cert:{name}", self.certificate_roles[name])
        return Principal(f"cert:{names[0]}", self.certificate_default_role)
