"""The model registry: its format (`format`) over a storage seam (`storage`), with the
local folder (`local`) as the default storage."""

from tlserve.server.registry.format import (
    ANY,
    BackboneManifest,
    HeadScores,
    ModelManifest,
    Registry,
    check_model_name,
    new_version_id,
)
from tlserve.server.registry.local import LocalFolderStorage
from tlserve.server.registry.storage import RegistryStorage

__all__ = [
    "ANY",
    "BackboneManifest",
    "HeadScores",
    "LocalFolderStorage",
    "ModelManifest",
    "Registry",
    "RegistryStorage",
    "check_model_name",
    "new_version_id",
]
