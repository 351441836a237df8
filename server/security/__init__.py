"""The trust boundary: who is calling (tokens, client certificates), what their role
allows, how fast they may go, and the TLS that carries it all.

Everything here is protocol-free: the gRPC and HTTP adapters hand over what a caller
presented (`Presented`), and the core decides with `AccessControl`.
"""

from tlserve.server.security.access import AccessControl, Presented, Principal
from tlserve.server.security.quotas import Action, RateLimits
from tlserve.server.security.roles import Role
from tlserve.server.security.tls import TlsFiles
from tlserve.server.security.tokens import TokenTable

__all__ = [
    "AccessControl",
    "Action",
    "Presented",
    "Principal",
    "RateLimits",
    "Role",
    "TlsFiles",
    "TokenTable",
]
