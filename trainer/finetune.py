"""Optional fine-tuning: after the head converged on cached features, unfreeze the top
layers of the backbone and train backbone + head end to end on the images, with
augmentation and a learning rate ~100x lower. BatchNorm layers stay in inference mode
(the backbone graph calls its base with training=False), so small batches cannot wreck
their statistics. The result is a new backbone, exported and content-addressed anew.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from tlserve.trainer.backbones import Backbone
from tlserve.trainer.head import class_weights

AUGMENTATIONS = ("flip", "rotation", "zoom")


@dataclass
class FineTuned:
    backbone: Backbone
    head: keras.Model
    history: dict[str, list[float]]
    unfrozen: list[str]


def fine_tune(
    backbone: Backbone,
    head: keras.Model,
    images: np.ndarray,
    y: np.ndarray,
    classes: int,
    *,
    layers: int,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    augment: tuple[str, ...],
    seed: int,
) -> FineTuned:
    """Train the top `layers` trainable-weight layers of the backbone with the head."""
    keras.utils.set_random_seed(seed)
    candidates = [
        layer
        for layer in _inner_layers(backbone.model)
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
    ]
    unfrozen = candidates[-layers:]
    backbone.model.trainable = True
    for layer in _inner_layers(backbone.model):
        layer.trainable = layer in unfrozen

    pipeline = [
        {
            "flip": keras.layers.RandomFlip("horizontal", seed=seed),
            "rotation": keras.layers.RandomRotation(0.05, seed=seed),
            "zoom": keras.layers.RandomZoom(0.1, seed=seed),
        }[name]
        for name in augment
    ]
    pixels = keras.Input(backbone.model.input_shape[1:], dtype="uint8", name="images")
    x = keras.ops.cast(pixels, "float32")
    for layer in pipeline:
        x = layer(x)  # active in fit only; inference skips augmentation
    x = keras.ops.cast(keras.ops.clip(keras.ops.round(x), 0, 255), "uint8")
    end_to_end = keras.Model(pixels, head(backbone.model(x)), name="fine_tune")
    end_to_end.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    fit = end_to_end.fit(
        images,
        y,
        epochs=epochs,
        batch_size=batch_size,
        class_weight=class_weights(y, classes),
        shuffle=True,
        verbose=0,
    )
    backbone.model.trainable = False
    history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    return FineTuned(backbone, head, history, [layer.name for layer in unfrozen])


def _inner_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers of the wrapped base network (the backbone wraps it with preprocessing)."""
    layers: list[keras.layers.Layer] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            layers.extend(_inner_layers(layer))
        else:
            layers.append(layer)
    return layers
