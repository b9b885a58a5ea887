"""The image tower for visual similarity: a small CNN from a greyscale image to a unit vector.

No pre-trained weights can be fetched at run time, so prodcat trains its own tower.
``train_supervised`` trains it with a cosine-softmax head (a linear layer over the
L2-normalised embedding, logits scaled by ``scale``): classes end up in separate
directions, so nearest neighbours by inner product are products of the same class.
Written with ``keras.ops`` only, so it runs on TensorFlow here and on JAX on a GPU host.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops


def build_tower(image_size: int = 28, dim: int = 64, seed: int = 0) -> keras.Model:
    """``[n, image_size, image_size, 1]`` floats in 0..1 -> ``[n, dim]`` unit vectors."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 1), name="image")
    x = inputs
    for filters in (32, 64):  # two blocks: conv, conv, pool
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dense(dim)(x)
    outputs = layers.UnitNormalization(name="embedding")(x)
    return keras.Model(inputs, outputs, name="image_tower")


class CosineHead(layers.Layer):
    """Logits = scale · cos(embedding, class weight): the tower learns directions, not norms."""

    def __init__(self, classes: int, scale: float = 16.0, **kwargs):
        super().__init__(**kwargs)
        self.classes, self.scale = classes, scale

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.classes),
                                      initializer="glorot_uniform", name="kernel")

    def call(self, embedding):
        weights = self.kernel / ops.sqrt(ops.sum(self.kernel ** 2, axis=0, keepdims=True) + 1e-12)
        return self.scale * ops.matmul(embedding, weights)


def as_input(images: np.ndarray) -> np.ndarray:
    """uint8 ``[n, h, w]`` -> float32 ``[n, h, w, 1]`` in 0..1."""
    return (np.asarray(images, dtype=np.float32) / 255.0)[..., None]


def train_supervised(images: np.ndarray, labels: np.ndarray, valid: tuple | None = None,
                     epochs: int = 10, batch_size: int = 128, dim: int = 64, seed: int = 0,
                     verbose: int = 2) -> tuple[keras.Model, list[float]]:
    """Train the tower on labelled images; keep the epoch with the best validation accuracy.
    Returns the tower and the validation accuracy per epoch."""
    tower = build_tower(images.shape[1], dim, seed)
    classes = int(labels.max()) + 1
    augment = keras.Sequential([layers.RandomFlip("horizontal", seed=seed),
                                layers.RandomTranslation(0.08, 0.08, seed=seed)])
    inputs = keras.Input(tower.input_shape[1:])
    logits = CosineHead(classes)(tower(augment(inputs)))
    model = keras.Model(inputs, logits)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    callbacks = []
    if valid is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=3,
                                                       mode="max", restore_best_weights=True))
    history = model.fit(as_input(images), labels, batch_size=batch_size, epochs=epochs,
                        validation_data=(as_input(valid[0]), valid[1]) if valid else None,
                        callbacks=callbacks, verbose=verbose)
    return tower, history.history.get("val_accuracy", [])


def embed(tower: keras.Model, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """float32 ``[n, dim]`` unit vectors, one per image."""
    return np.asarray(tower.predict(as_input(images), batch_size=batch_size, verbose=0),
                      dtype=np.float32)
