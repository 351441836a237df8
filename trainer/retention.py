"""Registry retention: keep the newest versions, CURRENT and the version it replaced,
and every backbone a kept version uses; delete the rest."""

from __future__ import annotations

import shutil

from server.registry import Registry


def apply_retention(registry: Registry, keep_versions: int) -> list[str]:
    versions = registry.versions()
    current = registry.current()
    protected = set(versions[:keep_versions])
    if current is not None:
        protected.add(current)
        parent = registry.model_manifest(current).parent
        if parent:
            protected.add(parent)
    removed = [v for v in versions if v not in protected]
    for version in removed:
        shutil.rmtree(registry.version_dir(version), ignore_errors=True)
    used = {registry.model_manifest(v).backbone_id for v in registry.versions()}
    if registry.backbones_dir.is_dir():
        for directory in registry.backbones_dir.iterdir():
            if not directory.name.startswith(".") and directory.name not in used:
                shutil.rmtree(directory, ignore_errors=True)
    return removed
