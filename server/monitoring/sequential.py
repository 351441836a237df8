"""The always-valid paired test that judges a challenger head by live labels.

A label on a prediction both heads scored is a pair. Pairs where both heads were right, or
both wrong, say nothing about which is better; a discordant pair is a win (the challenger
right, the champion wrong) or a loss. If the challenger is no better, a discordant pair is a
win with probability at most 1/2: the paired sign test (McNemar's). Here it is sequential:

    M+_n = mean over p in GRID+ of  prod_i (p / 0.5)^win_i ((1 - p) / 0.5)^loss_i

is a nonnegative martingale with mean 1 while wins are fair coin flips (a mixture of
likelihood ratios), so by Ville's inequality P(M+ ever reaches 2/alpha) <= alpha/2 however
often it is looked at: the challenger is promoted when it does. M- (p below 1/2) abandons a
worse challenger the same way. A challenger that is neither shown better nor worse within
`max_labels` pairs, or by its deadline, is abandoned: the champion stays unless the evidence
says otherwise. The p values are the always-valid ones (1 / the largest M so far) and the
interval is the matching confidence sequence for the win share among discordant pairs.

Seldon and KServe split traffic and leave judging to the user; a fixed-size test gives a
valid answer only when read once, at the planned size. `benchmarks/rollout.py` measures the
error rates and the labels this rule needs by simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

# Alternatives the mixture averages over: a challenger winning 55% .. 80% of disagreements.
# Weighted toward small gains, the ones that need many labels: a large gain crosses the
# threshold within a few dozen pairs whatever the weights.
_BETTER = np.array([0.55, 0.6, 0.65, 0.7, 0.8])
_WORSE = 1.0 - _BETTER
# The confidence sequence's mixture covers every win share.
_EVERY = np.linspace(0.02, 0.98, 49)
_SHARES = np.linspace(0.0, 1.0, 1001)


class Decision(StrEnum):
    RUNNING = "running"
    PROMOTE = "promote"  # the challenger is better, at the stated confidence
    ABANDON = "abandon"  # worse, or not shown better within the bound


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the pairs say so far."""

    decision: Decision
    reason: str
    pairs: int
    wins: int  # the challenger right, the champion wrong
    losses: int  # the champion right, the challenger wrong
    champion_correct: int
    challenger_correct: int
    p_better: float  # always-valid p value of "the challenger is no better"
    p_worse: float  # always-valid p value of "the challenger is no worse"
    win_share_low: float  # confidence sequence for the win share among discordant pairs
    win_share_high: float

    @property
    def accuracy_gain(self) -> float:
        """Challenger minus champion accuracy on the pairs."""
        return (self.wins - self.losses) / self.pairs if self.pairs else 0.0


class PairedSequentialTest:
    """Feed pairs in label order with `add`; `evidence()` is valid after every one."""

    def __init__(self, *, alpha: float = 0.05, max_labels: int = 2000) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        self.alpha = alpha
        self.max_labels = max_labels
        self._threshold = math.log(2.0 / alpha)
        self._best_better = 0.0  # the largest log M+ so far (the p value's running maximum)
        self._best_worse = 0.0
        self.pairs = self.wins = self.losses = 0
        self.champion_correct = self.challenger_correct = 0
        self._decided: tuple[Decision, str] | None = None

    def add(self, champion_right: bool, challenger_right: bool) -> None:
        if self._decided is not None:
            return  # evidence after a decision does not change it
        self.pairs += 1
        self.champion_correct += champion_right
        self.challenger_correct += challenger_right
        if challenger_right != champion_right:
            self.wins += challenger_right
            self.losses += champion_right
            better, worse = log_mixtures(np.array(self.wins), np.array(self.losses))
            self._best_better = max(self._best_better, float(better))
            self._best_worse = max(self._best_worse, float(worse))
        if self._best_better >= self._threshold:
            self._decided = (Decision.PROMOTE, "the challenger is better")
        elif self._best_worse >= self._threshold:
            self._decided = (Decision.ABANDON, "the challenger is worse")
        elif self.pairs >= self.max_labels:
            self._decided = (
                Decision.ABANDON,
                f"no difference shown within {self.max_labels} labeled pairs",
            )

    def expire(self, why: str) -> None:
        """The experiment's time is up: abandoned unless already decided."""
        if self._decided is None:
            self._decided = (Decision.ABANDON, why)

    def evidence(self) -> Evidence:
        decision, reason = self._decided or (Decision.RUNNING, "collecting labeled pairs")
        low, high = win_share_interval(self.wins, self.losses, self.alpha)
        return Evidence(
            decision=decision,
            reason=reason,
            pairs=self.pairs,
            wins=self.wins,
            losses=self.losses,
            champion_correct=self.champion_correct,
            challenger_correct=self.challenger_correct,
            p_better=min(1.0, math.exp(-self._best_better)),
            p_worse=min(1.0, math.exp(-self._best_worse)),
            win_share_low=low,
            win_share_high=high,
        )


def win_share_interval(wins: int, losses: int, alpha: float) -> tuple[float, float]:
    """The (1 - alpha) confidence sequence for the win share among discordant pairs: the
    shares q whose mixture likelihood ratio against q is still below 1/alpha."""
    if wins + losses == 0:
        return 0.0, 1.0
    q = _SHARES[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = _times_log(wins, _EVERY[None, :] / q) + _times_log(
            losses, (1 - _EVERY[None, :]) / (1 - q)
        )
    top = log_ratio.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):  # rows of +inf: shares the pairs rule out
        log_mean = (top + np.log(np.exp(log_ratio - top).mean(axis=1, keepdims=True)))[:, 0]
    log_mean = np.where(np.isfinite(top[:, 0]), log_mean, np.inf)
    kept = _SHARES[log_mean < math.log(1.0 / alpha)]
    if kept.size == 0:  # the grid stepped over the few shares left: the point estimate
        share = wins / (wins + losses)
        return share, share
    return float(kept.min()), float(kept.max())


def _times_log(count: int, ratio: np.ndarray) -> np.ndarray:
    """count * log(ratio), 0 when count is 0 (whatever the ratio)."""
    return np.log(ratio) * count if count else np.zeros_like(ratio)


def log_mixtures(wins: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log M+, log M-) for arrays of win and loss counts, element by element: the product
    over pairs depends on the counts alone."""
    return _log_mixture(wins, losses, _BETTER), _log_mixture(wins, losses, _WORSE)


def _log_mixture(wins: np.ndarray, losses: np.ndarray, shares: np.ndarray) -> np.ndarray:
    terms = wins[..., None] * np.log(2 * shares) + losses[..., None] * np.log(2 * (1 - shares))
    top = terms.max(axis=-1)
    return top + np.log(np.exp(terms - top[..., None]).mean(axis=-1))


@dataclass(frozen=True, slots=True)
class Simulated:
    """Simulated experiments: each one's decision and the labels it took."""

    decisions: list[Decision]
    labels: np.ndarray

    def rate(self, decision: Decision) -> float:
        return sum(d == decision for d in self.decisions) / len(self.decisions)


def simulate(
    win: float,
    loss: float,
    *,
    experiments: int,
    alpha: float,
    max_labels: int,
    seed: int,
) -> Simulated:
    """`experiments` experiments where each labeled pair is a win with probability `win`
    and a loss with probability `loss`, decided by the same rule as `PairedSequentialTest`
    (whose state is a function of the counts alone), vectorised over experiments."""
    rng = np.random.default_rng(seed)
    threshold = math.log(2.0 / alpha)
    decisions: list[Decision] = []
    labels: list[int] = []
    chunk = max(1, 4_000_000 // max_labels)
    for start in range(0, experiments, chunk):
        count = min(chunk, experiments - start)
        draws = rng.random((count, max_labels))
        wins = np.cumsum(draws < win, axis=1)
        losses = np.cumsum((draws >= win) & (draws < win + loss), axis=1)
        better, worse = log_mixtures(wins, losses)
        # A running maximum is what the test compares, so the first crossing decides.
        promoted = _first(better >= threshold, max_labels)
        abandoned = _first(worse >= threshold, max_labels)
        for up, down in zip(promoted.tolist(), abandoned.tolist(), strict=True):
            if up <= down and up < max_labels:
                decisions.append(Decision.PROMOTE)
                labels.append(up + 1)
            else:
                decisions.append(Decision.ABANDON)
                labels.append(min(down + 1, max_labels))
    return Simulated(decisions, np.array(labels))


def _first(crossed: np.ndarray, never: int) -> np.ndarray:
    """Index of each row's first True, `never` where there is none."""
    return np.where(crossed.any(axis=1), crossed.argmax(axis=1), never)
