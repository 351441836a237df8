"""Roles, which nest: `admin` may do everything `label` may, and `label` everything
`predict` may. Their own module, so the tokens and the access decision both use them
without importing each other."""

from __future__ import annotations

from enum import IntEnum

from tlserve.server.security.errors import SecurityConfigError


class Role(IntEnum):
    NONE = 0
    PREDICT = 1
    LABEL = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str, where: str = "role") -> Role:
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise SecurityConfigError(
                f"{where}: unknown role {value!r}; roles are none, predict, label, admin"
            ) from None
