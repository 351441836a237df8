"""The new tasks of the demo and the learning test: odd vs even digits (and, beside it in
the demo, low vs high: 0-4 or 5-9), taught to a frozen MNIST ConvNet by labeling rounds
through tlserve's public client API only, each task a model of its own.

Each round: predict the unlabeled pool (kept predictions), pick images to label (the
server's SuggestLabels, or at random for comparison), send the labels, wait until a
version trained on all of them is serving, and measure it through Predict on 1,000
held-out digits that are never labeled (sent with keep=False, so they are never
suggested either).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tlserve.clients import TlserveClient
from tlserve.trainer.mnist import load_digits, split_halves

EVALUATION_SIZE = 1000


def png(digit: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(digit, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def parity(digit: int) -> str:
    return "odd" if digit % 2 else "even"


def low_high(digit: int) -> str:
    return "low" if digit < 5 else "high"


@dataclass
class Task:
    images: np.ndarray
    digits: np.ndarray
    evaluation: np.ndarray  # indices never labeled
    pool: np.ndarray  # indices that may be labeled
    answer: Callable[[int], str] = parity  # a digit's label in this task

    @classmethod
    def load(cls, seed: int = 42, answer: Callable[[int], str] = parity) -> Task:
        images, digits = load_digits()
        _, target = split_halves(digits)  # the half the source network never saw
        order = np.random.default_rng(seed).permutation(target)
        return cls(images, digits, order[:EVALUATION_SIZE], order[EVALUATION_SIZE:], answer)

    def truth(self, index: int) -> str:
        """The right label of image `index`."""
        return self.answer(int(self.digits[index]))


@dataclass
class Round:
    labels: int
    version: str
    holdout_accuracy: float
    live_accuracy: float | None  # of the previous version, on the labels it was judged by
    feedback_to_serve_seconds: float
    predictions: list[str]


def wait_for_model_covering(
    client: TlserveClient,
    labeled: int,
    timeout: float = 300,
    alive: Callable[[], None] = lambda: None,
    model: str = "",
) -> str:
    """`model`'s served version trained on all `labeled` labels (earlier runs may have seen
    fewer). `alive` raises if a process the wait depends on has died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive()
        try:
            served = client.get_model(model=model)
        except Exception:
            time.sleep(0.2)
            continue
        dataset = served.card.get("dataset", {})
        if dataset.get("train", 0) + dataset.get("holdout", 0) >= labeled:
            return served.version
        time.sleep(0.2)
    raise TimeoutError(
        f"no version of {model or 'the default model'} trained on {labeled} labels was served "
        f"within {timeout:.0f}s"
    )


def holdout_accuracy(client: TlserveClient, task: Task, model: str = "") -> tuple[float, list[str]]:
    predicted: list[str] = []
    for start in range(0, len(task.evaluation), 250):
        chunk = task.evaluation[start : start + 250]
        result = client.predict(
            [png(task.images[i]) for i in chunk], top_k=1, keep=False, model=model
        )
        predicted += [p.label for p in result.predictions]
    truth = [task.truth(i) for i in task.evaluation]
    return float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)])), predicted


def label_rounds(
    client: TlserveClient,
    task: Task,
    *,
    strategy: str,
    seed_labels: int = 10,
    round_labels: int = 30,
    rounds: int = 3,
    alive: Callable[[], None] = lambda: None,
    model: str = "",
) -> Iterator[Round]:
    """Label `seed_labels` random digits, then `rounds` rounds of `round_labels` chosen by
    `strategy` ("suggested": SuggestLabels with its default strategy; "random"), as
    `model`'s labels ("": the default model)."""
    rng = np.random.default_rng(7)
    labeled: set[int] = set()
    batch = [(int(i), "") for i in rng.permutation(task.pool)[:seed_labels]]
    answered_by = ""  # the version whose predictions this round's labels judge
    for round_index in range(rounds + 1):
        if round_index > 0:
            answered_by = client.get_model(model=model).version
            batch = pick(
                client,
                task.pool,
                labeled,
                round_labels,
                rng,
                lambda i: png(task.images[i]),
                "random" if strategy == "random" else "balanced",
                model,
            )
        for digit, prediction_id in batch:
            label = task.truth(digit)
            if prediction_id:
                client.submit_feedback(
                    label, prediction_id=prediction_id, source=strategy, model=model
                )
            else:
                client.submit_feedback(
                    label, image=png(task.images[digit]), source=strategy, model=model
                )
            labeled.add(digit)
        sent = time.monotonic()
        version = wait_for_model_covering(client, len(labeled), alive=alive, model=model)
        waited = time.monotonic() - sent
        accuracy, predictions = holdout_accuracy(client, task, model)
        judged = client.get_model(answered_by, model=model) if answered_by else None
        live = judged.live_accuracy if judged and judged.live_feedback_count else None
        yield Round(len(labeled), version, accuracy, live, waited, predictions)


def pick(
    client: TlserveClient,
    pool: Iterable[int],
    labeled: set[int],
    count: int,
    rng: np.random.Generator,
    png_of: Callable[[int], bytes],
    strategy: str = "balanced",
    model: str = "",
) -> list[tuple[int, str]]:
    """`count` pool indices not labeled yet, with their prediction ids (empty at random):
    at random (`strategy` "random"), else the ones SuggestLabels picks with `strategy`."""
    unlabeled = [int(i) for i in pool if int(i) not in labeled]
    if strategy == "random":
        return [(int(i), "") for i in rng.permutation(unlabeled)[:count]]
    return suggested(client, unlabeled, png_of, count, strategy, model)


def suggested(
    client: TlserveClient,
    unlabeled: list[int],
    png_of: Callable[[int], bytes],
    count: int,
    strategy: str = "balanced",
    model: str = "",
) -> list[tuple[int, str]]:
    """Predict the unlabeled pool with `model`'s served version (kept, so the server can
    choose among them), then ask SuggestLabels; (pool index, prediction id) pairs."""
    by_id: dict[str, int] = {}
    for start in range(0, len(unlabeled), 250):
        chunk = unlabeled[start : start + 250]
        result = client.predict([png_of(i) for i in chunk], top_k=1, model=model)
        by_id.update((p.prediction_id, i) for p, i in zip(result.predictions, chunk, strict=True))
    suggestions = client.suggest_labels(count, strategy, images=False, model=model)
    return [(by_id[s.prediction_id], s.prediction_id) for s in suggestions]
