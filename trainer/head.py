"""The classifier head: features -> softmax over the current label set."""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

MIN_VALIDATION_SAMPLES = 30


@dataclass
class HeadResult:
    model: keras.Model
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    epochs_run: int = 0


def build_head(
    feature_dim: int, classes: int, hidden_units: list[int], dropout: float
) -> keras.Model:
    features = keras.Input((feature_dim,), dtype="float32", name="features")
    x = features
    for units in hidden_units:
        x = keras.layers.Dense(units, activation="relu")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout)(x)
    probabilities = keras.layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model(features, probabilities, name="head")


def class_weights(y: np.ndarray, classes: int) -> dict[int, float]:
    """Balanced weights: a class with half the samples counts twice as much per sample."""
    counts = np.bincount(y, minlength=classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(classes)
    weights[present] = len(y) / (present.sum() * counts[present])
    return {i: float(w) for i, w in enumerate(weights)}


def train_head(
    x: np.ndarray,
    y: np.ndarray,
    classes: int,
    *,
    hidden_units: list[int],
    dropout: float,
    learning_rate: float,
    epochs: int,
    batch_size: int,
    patience: int,
    validation_percent: float,
    seed: int,
    log_dir: str | None = None,
) -> HeadResult:
    keras.utils.set_random_seed(seed)
    model = build_head(x.shape[1], classes, hidden_units, dropout)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    validation_count = int(len(x) * validation_percent / 100)
    # Early stopping needs a validation set worth the name. A dozen samples (worse: the
    # hard ones active learning picks) make val_loss noise, and "best epoch" then means
    # "barely trained"; small sets train on everything until the training loss settles.
    use_validation = validation_count >= max(MIN_VALIDATION_SAMPLES, 3 * classes)
    validation = order[:validation_count] if use_validation else order[:0]
    training = order[validation_count:] if use_validation else order
    monitor = "val_loss" if use_validation else "loss"
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(
            monitor=monitor, patience=patience, restore_best_weights=True, start_from_epoch=5
        )
    ]
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False))
    fit = model.fit(
        x[training],
        y[training],
        validation_data=(x[validation], y[validation]) if use_validation else None,
        epochs=epochs,
        batch_size=batch_size,
        class_weight=class_weights(y[training], classes),
        callbacks=callbacks,
        shuffle=True,
        verbose=0,
    )
    history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    best_epoch = int(np.argmin(history[monitor])) + 1
    return HeadResult(model, history, best_epoch, len(history[monitor]))


def head_function(model: keras.Model, feature_dim: int) -> tf.types.experimental.GenericFunction:
    @tf.function(input_signature=[tf.TensorSpec([None, feature_dim], tf.float32, name="features")])
    def classify(features: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"probabilities": model(features, training=False)}

    return classify
