"""The one error kind of a trust boundary that cannot be set up as configured."""

from __future__ import annotations


class SecurityConfigError(ValueError):
    """Credentials, TLS files or bind addresses that cannot be used as configured; the
    message names the setting and never contains a secret."""
