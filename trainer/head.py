"""The classifier head: features -> softmax over the current label set."""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

MIN_VALIDATION_SAMPLES = 30
WARMUP_EPOCHS = 5


@dataclass
class HeadResult:
    model: keras.Model
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    epochs_run: int = 0


@keras.saving.register_keras_serializable(package="tlserve")
class ScaleFreeNormalization(keras.layers.Layer):
    """Each feature vector scaled to unit length, whatever its magnitude. Backbones differ
    by orders of magnitude (an untrained one's features are ~1e-11, where Keras'
    UnitNormalization's epsilon swallows them), and with few labels a head on directions
    (a cosine classifier) learns far faster than one on raw activations."""

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        peak = tf.reduce_max(tf.abs(inputs), axis=-1, keepdims=True)
        scaled = inputs / tf.where(peak > 0, peak, tf.ones_like(peak))
        length = tf.sqrt(tf.reduce_sum(tf.square(scaled), axis=-1, keepdims=True))
        return scaled / tf.where(length > 0, length, tf.ones_like(length))


def build_head(
    feature_dim: int,
    classes: int,
    hidden_units: list[int],
    dropout: float,
    normalize: bool = True,
) -> keras.Model:
    features = keras.Input((feature_dim,), dtype="float32", name="features")
    x = ScaleFreeNormalization(name="normalize")(features) if normalize else features
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
    normalize: bool = True,
    log_dir: str | None = None,
) -> HeadResult:
    """Adam on sparse cross-entropy with balanced class weights; early stopping keeps the
    best epoch. A whole epoch runs as one compiled graph over tensors already in memory:
    Keras' fit() spends ~90 ms per epoch building input pipelines, which for a head on
    cached features is most of the run (and of feedback-to-serve time)."""
    keras.utils.set_random_seed(seed)
    model = build_head(x.shape[1], classes, hidden_units, dropout, normalize)
    optimizer = keras.optimizers.Adam(learning_rate)
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

    weights_by_class = class_weights(y[training], classes)
    x_train = tf.constant(x[training], tf.float32)
    y_train = tf.constant(y[training], tf.int32)
    w_train = tf.constant([weights_by_class[int(c)] for c in y[training]], tf.float32)
    x_val = tf.constant(x[validation], tf.float32)
    y_val = tf.constant(y[validation], tf.int32)
    steps = max(1, -(-len(training) // batch_size))
    seeds = tf.random.Generator.from_seed(seed)

    @tf.function
    def train_epoch() -> tuple[tf.Tensor, tf.Tensor]:
        permutation = tf.argsort(seeds.uniform([len(training)]))
        total_loss = tf.constant(0.0)
        correct = tf.constant(0.0)
        for step in tf.range(steps):
            batch = permutation[step * batch_size : (step + 1) * batch_size]
            features = tf.gather(x_train, batch)
            labels = tf.gather(y_train, batch)
            sample_weights = tf.gather(w_train, batch)
            with tf.GradientTape() as tape:
                probabilities = model(features, training=True)
                losses = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
                loss = tf.reduce_sum(losses * sample_weights) / tf.reduce_sum(sample_weights)
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
            total_loss += tf.reduce_sum(losses)
            predicted = tf.argmax(probabilities, axis=1, output_type=tf.int32)
            correct += tf.reduce_sum(tf.cast(predicted == labels, tf.float32))
        count = tf.cast(len(training), tf.float32)
        return total_loss / count, correct / count

    @tf.function
    def evaluate(features: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        probabilities = model(features, training=False)
        loss = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
        predicted = tf.argmax(probabilities, axis=1, output_type=tf.int32)
        return tf.reduce_mean(loss), tf.reduce_mean(tf.cast(predicted == labels, tf.float32))

    writer = tf.summary.create_file_writer(log_dir) if log_dir else None
    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    if use_validation:
        history.update({"val_loss": [], "val_accuracy": []})
    best, best_epoch, best_weights = np.inf, 0, model.get_weights()
    for epoch in range(1, epochs + 1):
        loss, accuracy = (float(v) for v in train_epoch())
        history["loss"].append(loss)
        history["accuracy"].append(accuracy)
        if use_validation:
            val_loss, val_accuracy = (float(v) for v in evaluate(x_val, y_val))
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(val_accuracy)
        if writer is not None:
            with writer.as_default(step=epoch):
                for name, values in history.items():
                    tf.summary.scalar(name, values[-1])
        current = history[monitor][-1]
        # The first epochs always count as best so far: a near-untrained head that merely
        # scored low noise early must not win (Keras' start_from_epoch).
        if current < best or epoch <= WARMUP_EPOCHS:
            best, best_epoch, best_weights = current, epoch, model.get_weights()
        elif epoch - best_epoch >= patience:
            break
    model.set_weights(best_weights)
    if writer is not None:
        writer.close()
    return HeadResult(model, history, best_epoch, len(history["loss"]))


def head_function(model: keras.Model, feature_dim: int) -> tf.types.experimental.GenericFunction:
    @tf.function(input_signature=[tf.TensorSpec([None, feature_dim], tf.float32, name="features")])
    def classify(features: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"probabilities": model(features, training=False)}

    return classify
