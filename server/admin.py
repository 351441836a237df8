"""Admin operations: the token check and rollback, free of gRPC."""

from __future__ import annotations

import asyncio
import hmac

from tlserve.server.errors import InvalidInput, ModelRejected, PermissionDenied, Unauthenticated
from tlserve.server.model_slot import ModelSlot
from tlserve.server.registry import Registry


class AdminGuard:
    def __init__(self, token: str) -> None:
        self._token = token

    def check(self, presented: str | None) -> None:
        """Pass when no token is configured, or the presented one matches (constant time)."""
        if not self._token:
            return
        if not presented:
            raise Unauthenticated(
                "this admin call needs `authorization: Bearer <token>` metadata "
                "(the server's TLSERVE_ADMIN_TOKEN)"
            )
        if not hmac.compare_digest(presented.encode(), self._token.encode()):
            raise PermissionDenied("the admin token is not valid")


class ModelAdmin:
    def __init__(self, slot: ModelSlot, registry: Registry) -> None:
        self.slot = slot
        self.registry = registry

    async def rollback(self, version: str) -> tuple[str, str]:
        """Point CURRENT at `version` (default: the served version's parent); returns
        (previous, new) once the new one is serving."""
        served = self.slot.require()
        target = version or served.manifest.parent
        if not target:
            raise InvalidInput(
                f"version {served.version} has no parent to roll back to; name a version"
            )
        if target == served.version:
            raise InvalidInput(f"version {target} is already serving")
        await asyncio.to_thread(self.registry.set_current, target)  # NotFound if unknown
        await self.slot.refresh()
        current = self.slot.require()
        if current.version != target:
            raise ModelRejected(
                f"version {target} was refused by verification and {current.version} is still "
                "serving; see the server log"
            )
        return served.version, current.version
