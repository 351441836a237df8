"""Which kept predictions to offer for labeling: the active-learning selection behind
SuggestLabels.

`balanced` (the default) follows what works with few labels in the literature: while
the model has seen few labels per class, uncertainty scores are unreliable and pure
uncertainty sampling picks outliers, so the first picks are *typical* samples (dense
regions of the backbone's feature space, as in TypiClust, Hacohen et al. 2022); as labels
accumulate the weight moves to the model's *margin* (Scheffer et al. 2001), and every
batch is spread over k-means clusters so it never holds near-copies (as in Cluster-Margin,
Citovsky et al. 2021). The single-score strategies (least confidence, margin, entropy)
stay available, diversified greedily.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Neighbours that define how typical (dense) a sample's neighbourhood is.
TYPICALITY_NEIGHBOURS = 20
# Labels per class after which the margin has the full weight.
LABELS_PER_CLASS_FOR_MARGIN = 20
KMEANS_ITERATIONS = 15


@dataclass(frozen=True, slots=True)
class Candidate:
    """What selection needs to know about one unlabeled kept prediction."""

    content_id: str
    features: np.ndarray
    probabilities: np.ndarray


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (scale-free, as the trainer's head sees features)."""
    features = features.astype(np.float64)
    peak = np.abs(features).max(axis=1, keepdims=True)
    features = features / np.where(peak > 0, peak, 1)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1)


def margin_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """1 - (best - second best) per row: 1 on the decision boundary, 0 when certain."""
    top = -np.sort(-probabilities, axis=1)
    second = top[:, 1] if top.shape[1] > 1 else np.zeros(len(top))
    return np.asarray(1.0 - (top[:, 0] - second))


def typicality(unit: np.ndarray, neighbours: int = TYPICALITY_NEIGHBOURS) -> np.ndarray:
    """Inverse mean distance to the nearest neighbours, scaled to (0, 1]."""
    n = len(unit)
    if n < 2:
        return np.ones(n)
    k = min(neighbours, n - 1)
    distances = np.sqrt(np.maximum(2.0 - 2.0 * unit @ unit.T, 0.0))
    np.fill_diagonal(distances, np.inf)
    nearest = np.partition(distances, k - 1, axis=1)[:, :k]
    value = 1.0 / (nearest.mean(axis=1) + 1e-9)
    return np.asarray(value / value.max())


def kmeans(points: np.ndarray, clusters: int, seed: int = 0) -> np.ndarray:
    """Cluster index per point: k-means++ seeding, then Lloyd's iterations."""
    n = len(points)
    clusters = min(clusters, n)
    rng = np.random.default_rng(seed)
    centres = [points[rng.integers(n)]]
    closest = np.sum((points - centres[0]) ** 2, axis=1)
    for _ in range(1, clusters):
        total = closest.sum()
        pick = rng.choice(n, p=closest / total) if total > 0 else rng.integers(n)
        centres.append(points[pick])
        closest = np.minimum(closest, np.sum((points - points[pick]) ** 2, axis=1))
    centre = np.stack(centres)
    assignment = np.zeros(n, dtype=np.int64)
    for iteration in range(KMEANS_ITERATIONS):
        distances = (
            np.sum(points**2, axis=1)[:, None] - 2 * points @ centre.T + np.sum(centre**2, axis=1)
        )
        updated = np.argmin(distances, axis=1)
        if np.array_equal(updated, assignment) and iteration > 0:
            break
        assignment = updated
        for c in range(clusters):
            members = points[assignment == c]
            if len(members):
                centre[c] = members.mean(axis=0)
    return assignment


def margin_weight(labeled: int, classes: int) -> float:
    """How much the model's margin counts (0: cold start, typicality only; 1: fully)."""
    return float(min(1.0, labeled / (LABELS_PER_CLASS_FOR_MARGIN * max(classes, 2))))


def balanced_selection(
    candidates: Sequence[Candidate], count: int, *, labeled: int, seed: int = 0
) -> tuple[list[int], np.ndarray]:
    """Indices of up to `count` candidates worth labeling, best first, one image per
    content id, and every candidate's score."""
    if not candidates:
        return [], np.zeros(0)
    unit = unit_rows(np.stack([c.features for c in candidates]))
    probabilities = np.stack([c.probabilities for c in candidates])
    weight = margin_weight(labeled, probabilities.shape[1])
    # Typicality hands over to the margin: dense regions first, the decision boundary later.
    scores = typicality(unit) ** (1 - weight) * margin_uncertainty(probabilities) ** weight
    # The cold start clusters the whole pool; later rounds only its most uncertain part.
    n = len(candidates)
    shortlist_size = max(count, round(n * (1 - weight) + 3 * count * weight))
    shortlist = np.argsort(-scores, kind="stable")[:shortlist_size]
    # Twice as many clusters as picks, and the picks from the largest: an outlier that
    # k-means gives a cluster of its own is never worth a label (TypiClust does the same).
    assignment = kmeans(unit[shortlist], 2 * count, seed)
    sizes = np.bincount(assignment)
    best_per_cluster: dict[int, int] = {}
    for position in np.argsort(-scores[shortlist], kind="stable"):
        best_per_cluster.setdefault(int(assignment[position]), int(shortlist[position]))
    ranked = sorted(best_per_cluster, key=lambda c: -sizes[c] * scores[best_per_cluster[c]])
    picked = sorted((best_per_cluster[c] for c in ranked[:count]), key=lambda i: -scores[i])
    # Where clusters repeat an image (or are fewer than asked), the next best fill in.
    rest = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in picked]
    return distinct_content(candidates, picked + rest, count), scores


def comparable(candidates: Sequence[Candidate]) -> bool:
    """Whether the candidates' features share one space (predictions of versions with
    different backbones do not)."""
    return len({c.features.shape for c in candidates}) == 1


def diverse_selection(candidates: Sequence[Candidate], scores: np.ndarray, count: int) -> list[int]:
    """Greedy: score times distance to what is already chosen, so a batch covers
    different kinds of images rather than n near-copies of one; one image per content id."""
    if not candidates:
        return []
    by_score = [int(i) for i in np.argsort(-scores, kind="stable")]
    if not comparable(candidates):
        return distinct_content(candidates, by_score, count)
    unit = unit_rows(np.stack([c.features for c in candidates]))
    contents = np.array([c.content_id for c in candidates])
    weight = scores / scores.max() if scores.max() > 0 else np.ones_like(scores)
    chosen: list[int] = []
    taken = np.zeros(len(candidates), dtype=bool)  # chosen, or the same image as one
    distance = np.full(len(candidates), 1.0)
    best = by_score[0]
    while True:
        chosen.append(best)
        taken |= contents == contents[best]
        distance = np.minimum(distance, 1.0 - unit @ unit[best])
        if len(chosen) == count or taken.all():
            return chosen
        value = np.where(taken, -1.0, weight * np.maximum(distance, 0))
        best = int(np.argmax(value))
        if value[best] <= 0:  # everything left is a near-copy: fall back to the score
            rest = [i for i in by_score if not taken[i]]
            return chosen + distinct_content(candidates, rest, count - len(chosen))


def distinct_content(
    candidates: Sequence[Candidate], order: Sequence[int], count: int
) -> list[int]:
    """The first `count` of `order` with no image twice (the same image predicted again)."""
    seen: set[str] = set()
    chosen = []
    for index in order:
        content = candidates[index].content_id
        if content in seen:
            continue
        seen.add(content)
        chosen.append(int(index))
        if len(chosen) == count:
            break
    return chosen
