"""The models a server serves, by name, as heads over shared resident backbones.

The model noun between the core and the slots: every use case asks `ModelSet.get(name)`
for the model a request names (empty: the default model) and gets its `ModelSlot`, which
holds that model's served version. The default model is the registry's `CURRENT`, as
every earlier release wrote it; named models are the ones the registry's model index
lists (`Registry.model_names`), each with its own pointer. A model appears when the index
names it and its pointer is set, and goes when the index drops it: its slot retires the
served version, which finishes the requests that leased it and is released after them.

Backbones are resident once per id (`BackboneCache`), whatever the number of models and
versions using them: five tasks on one MobileNetV2 cost one backbone session and five
small heads, and requests for all five batch through one backbone run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tlserve.server.errors import NoModel, NotFound, TlserveError, quoted
from tlserve.server.model_slot import BackboneCache, ModelSlot
from tlserve.server.monitoring.live import VersionMonitor
from tlserve.server.registry import Registry

log = logging.getLogger(__name__)

# How many model names an error message lists before it says "and N more".
_NAMES_IN_ERRORS = 10


class ModelSet:
    """The served models by name; used from the event loop's thread."""

    def __init__(
        self,
        registry: Registry,
        make_slot: Callable[[str, Registry], ModelSlot],
        backbones: BackboneCache,
        *,
        default_name: str,
        max_models: int,
    ) -> None:
        self.registry = registry
        self.default_name = default_name
        self.max_models = max_models
        self.backbones = backbones
        self._make_slot = make_slot
        self.default = make_slot(default_name, registry)
        self._named: dict[str, ModelSlot] = {}
        self._over_limit: set[str] = set()
        self._index_problem: str | None = None
        self._refresh_lock = asyncio.Lock()

    # ---- lookup --------------------------------------------------------------

    def get(self, name: str) -> ModelSlot:
        """The model a request names; "" and the default model's name are the default."""
        if not name or name == self.default_name:
            return self.default
        slot = self._named.get(name)
        if slot is not None:
            return slot
        if name in self._over_limit:
            raise NoModel(
                f"model {name!r} is in the registry but not loaded: this server serves at "
                f"most {self.max_models} models (TLSERVE_MAX_MODELS)"
            )
        raise NotFound(f"unknown model {quoted(name, 128)}; this server serves {self._listing()}")

    def slots(self) -> list[ModelSlot]:
        """Every model, the default first, then by name."""
        return [self.default, *(self._named[name] for name in sorted(self._named))]

    def monitors(self) -> list[tuple[str, str, VersionMonitor]]:
        """(model, version, its live monitor) for every served version and every running
        experiment's challenger."""
        return [
            (slot.model_name, loaded.version, loaded.monitor)
            for slot in self.slots()
            for loaded in (slot.current, slot.challenger)
            if loaded is not None
        ]

    def names(self) -> list[str]:
        return [slot.model_name for slot in self.slots()]

    def _listing(self) -> str:
        names = self.names()
        shown = ", ".join(repr(n) for n in names[:_NAMES_IN_ERRORS])
        more = len(names) - _NAMES_IN_ERRORS
        return shown + (f" and {more} more" if more > 0 else "")

    # ---- following the registry ----------------------------------------------

    async def refresh(self) -> None:
        """Add the models the index gained, retire the ones it lost, then let every slot
        follow its pointer; one model's bad version never holds up another's."""
        async with self._refresh_lock:
            await self._follow_index()
            for slot in self.slots():
                try:
                    await slot.refresh()
                except Exception:  # a slot logs its own refusals; this is the unexpected
                    log.exception("model %s: refresh failed", slot.model_name)
            self.backbones.keep_only(
                {slot.current.backbone.id for slot in self.slots() if slot.current is not None}
            )

    async def watch(self, poll_seconds: float) -> None:
        """Follow the registry forever (cancel the task to stop)."""
        while True:
            await self.refresh()
            await asyncio.sleep(poll_seconds)

    def close(self) -> None:
        for slot in self.slots():
            slot.close()

    async def _follow_index(self) -> None:
        try:
            listed = await asyncio.to_thread(self.registry.model_names)
        except TlserveError as exc:
            if str(exc) != self._index_problem:
                self._index_problem = str(exc)
                log.error("the registry's model index is unusable, models unchanged: %s", exc)
            return
        self._index_problem = None
        wanted = [name for name in listed if name != self.default_name]
        for name in [n for n in self._named if n not in wanted]:
            log.info("model %s left the registry's index: draining and unloading it", name)
            self._named.pop(name).close()
        over_limit = set()
        for name in wanted:
            if name in self._named:
                continue
            if len(self._named) + 1 >= self.max_models:  # the default model counts too
                over_limit.add(name)
                continue
            self._named[name] = self._make_slot(name, self.registry.for_model(name))
            log.info("model %s joined from the registry's index", name)
        if over_limit and over_limit != self._over_limit:
            log.error(
                "not loading models %s: this server serves at most %d (TLSERVE_MAX_MODELS)",
                ", ".join(sorted(over_limit)),
                self.max_models,
            )
        self._over_limit = over_limit
