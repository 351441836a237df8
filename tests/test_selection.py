"""Active-learning selection (tlserve.server.selection) on synthetic feature spaces."""

from __future__ import annotations

import numpy as np

from tlserve.server.selection import (
    Candidate,
    balanced_selection,
    kmeans,
    margin_uncertainty,
    margin_weight,
    typicality,
    unit_rows,
)


def clusters(seed: int = 0) -> tuple[list[Candidate], np.ndarray]:
    """Four dense clusters of 50 plus 10 scattered outliers, in 16 dimensions; the
    model is equally unsure everywhere (cold start)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 16)) * 5
    points = [centres[c] + rng.normal(scale=0.3, size=16) for c in range(4) for _ in range(50)]
    points += list(rng.normal(size=(10, 16)) * 8)
    membership = np.array([c for c in range(4) for _ in range(50)] + [-1] * 10)
    candidates = [
        Candidate(f"image-{i}", np.asarray(p, np.float32), np.array([0.5, 0.5], np.float32))
        for i, p in enumerate(points)
    ]
    return candidates, membership


def test_cold_start_picks_typical_images_from_every_cluster_and_no_outlier() -> None:
    candidates, membership = clusters()
    picked, scores = balanced_selection(candidates, 4, labeled=0)
    assert len(picked) == 4 and len(scores) == len(candidates)
    assert sorted(membership[picked]) == [0, 1, 2, 3]
    outliers = membership == -1
    assert scores[outliers].max() < np.median(scores[~outliers])


def test_with_labels_the_margin_leads_but_batches_stay_diverse() -> None:
    candidates, membership = clusters(1)
    rng = np.random.default_rng(2)
    # The model is sure about clusters 0 and 1, unsure about 2 and 3.
    unsure = np.isin(membership, [2, 3])
    confident = [
        Candidate(
            c.content_id,
            c.features,
            np.array([0.5, 0.5] if u else [0.99, 0.01], np.float32)
            + rng.uniform(0, 0.01, 2).astype(np.float32),
        )
        for c, u in zip(candidates, unsure, strict=True)
    ]
    picked, _ = balanced_selection(confident, 6, labeled=200)
    assert set(membership[picked]) == {2, 3}
    assert margin_weight(0, 2) == 0.0 and margin_weight(200, 2) == 1.0


def test_one_image_is_offered_once() -> None:
    candidates, _ = clusters()
    twins = [Candidate("same", c.features, c.probabilities) for c in candidates[:50]]
    picked, _ = balanced_selection(twins + candidates[50:], 10, labeled=0)
    assert sum(1 for i in picked if i < 50) <= 1
    assert len(picked) == 10


def test_building_blocks() -> None:
    unit = unit_rows(np.array([[3e-12, 4e-12], [0.0, 0.0], [-5.0, 0.0]]))
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]])
    np.testing.assert_allclose(margin_uncertainty(np.array([[0.7, 0.2, 0.1]])), [0.5])
    values = typicality(unit_rows(np.array([[1.0, 0], [1.0, 0.01], [1.0, -0.01], [0, 1.0]])))
    assert values.argmin() == 3 and values.max() == 1.0
    assignment = kmeans(np.array([[0.0], [0.1], [10.0], [10.1]]), 2)
    assert assignment[0] == assignment[1] != assignment[2] == assignment[3]
