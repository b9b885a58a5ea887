"""The image tower for visual similarity: a small CNN from a greyscale image to a unit vector.

No pre-trained weights can be fetched at run time, so prodcat trains its own tower.
``train_supervised`` trains it with a cosine-softmax head and an additive margin
(CosFace, Wang et al. 2018: logit_j = s · (cos θ_j − m·[j = y])): classes end up
in separate, tight directions, so nearest neighbours by inner product are products
of the same class. ``embed`` can average an image's and its mirror image's vectors
(test-time augmentation, ``flip``). ``train_contrastive`` is the self-supervised
variant (SimCLR, Chen et al. 2020): no labels, two random views of each image pulled
together and pushed away from every other image of the batch (the NT-Xent loss).
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
    """cos θ_j = cos(embedding, class weight j): the tower learns directions, not norms."""

    def __init__(self, classes: int, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.classes),
                                      initializer="glorot_uniform", name="kernel")

    def call(self, embedding):
        weights = self.kernel / ops.sqrt(ops.sum(self.kernel ** 2, axis=0, keepdims=True) + 1e-12)
        return ops.matmul(embedding, weights)


class CosFaceLoss(keras.losses.Loss):
    """Softmax cross-entropy over s · (cos θ_j − m·[j = y]) (CosFace's large-margin cosine loss)."""

    def __init__(self, scale: float = 16.0, margin: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.margin = scale, margin

    def call(self, y_true, cosines):
        target = ops.one_hot(ops.cast(ops.reshape(y_true, [-1]), "int32"), ops.shape(cosines)[-1])
        logits = self.scale * (cosines - self.margin * target)
        return keras.losses.categorical_crossentropy(target, logits, from_logits=True)


def as_input(images: np.ndarray) -> np.ndarray:
    """uint8 ``[n, h, w]`` -> float32 ``[n, h, w, 1]`` in 0..1."""
    return (np.asarray(images, dtype=np.float32) / 255.0)[..., None]


def train_supervised(images: np.ndarray, labels: np.ndarray, valid: tuple | None = None,
                     epochs: int = 10, batch_size: int = 128, dim: int = 64, seed: int = 0,
                     margin: float = 0.2, patience: int = 5,
                     verbose: int = 2) -> tuple[keras.Model, list[float]]:
    """Train the tower on labelled images (class ids ``0..C-1``), the learning rate decaying
    to zero over ``epochs`` (cosine); keep the epoch with the best validation accuracy.
    Returns the tower and the validation accuracy per epoch."""
    tower = build_tower(images.shape[1], dim, seed)
    classes = int(labels.max()) + 1
    augment = keras.Sequential([layers.RandomFlip("horizontal", seed=seed),
                                layers.RandomTranslation(0.08, 0.08, seed=seed)])
    inputs = keras.Input(tower.input_shape[1:])
    cosines = CosineHead(classes)(tower(augment(inputs)))
    model = keras.Model(inputs, cosines)
    steps = epochs * -(-len(images) // batch_size)
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
                      1e-3, steps)),
                  loss=CosFaceLoss(margin=margin), metrics=["sparse_categorical_accuracy"])
    callbacks = []
    if valid is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_sparse_categorical_accuracy", patience=patience, mode="max",
            restore_best_weights=True))
    history = model.fit(as_input(images), labels, batch_size=batch_size, epochs=epochs,
                        validation_data=(as_input(valid[0]), valid[1]) if valid else None,
                        callbacks=callbacks, verbose=verbose)
    return tower, history.history.get("val_sparse_categorical_accuracy", [])


def embed(tower: keras.Model, images: np.ndarray, batch_size: int = 512,
          flip: bool = False) -> np.ndarray:
    """float32 ``[n, dim]`` unit vectors, one per image; with ``flip``, the normalised mean
    of the image's and its mirror image's vectors."""
    pixels = as_input(images)
    vectors = np.asarray(tower.predict(pixels, batch_size=batch_size, verbose=0), np.float32)
    if flip:
        vectors = vectors + np.asarray(tower.predict(pixels[:, :, ::-1], batch_size=batch_size,
                                                     verbose=0), np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


def nt_xent(views, temperature: float = 0.1):
    """SimCLR's NT-Xent loss over ``[n, 2, dim]`` unit vectors (two views per image): for view
    i, −log( exp(s(i, i⁺)/τ) / Σ_{k≠i} exp(s(i, k)/τ) ) over all 2n views, averaged."""
    n = ops.shape(views)[0]
    z = ops.concatenate([views[:, 0], views[:, 1]], axis=0)  # [2n, dim]
    logits = ops.matmul(z, ops.transpose(z)) / temperature
    logits = logits - 1e9 * ops.eye(2 * n)  # k ≠ i
    positives = ops.concatenate([ops.arange(n) + n, ops.arange(n)], axis=0)
    return keras.losses.sparse_categorical_crossentropy(positives, logits, from_logits=True)


def train_contrastive(images: np.ndarray, epochs: int = 10, batch_size: int = 256,
                      dim: int = 64, temperature: float = 0.1, seed: int = 0,
                      verbose: int = 2) -> tuple[keras.Model, list[float]]:
    """Train the tower without labels: two augmented views of each image (mirror, shift,
    zoom, contrast), NT-Xent over the batch, the learning rate decaying to zero (cosine).
    Returns the tower and the loss per epoch."""
    tower = build_tower(images.shape[1], dim, seed)
    augment = keras.Sequential([layers.RandomFlip("horizontal", seed=seed),
                                layers.RandomTranslation(0.15, 0.15, seed=seed),
                                layers.RandomZoom(0.2, seed=seed),
                                layers.RandomContrast(0.4, seed=seed)])
    inputs = keras.Input(tower.input_shape[1:])
    views = ops.stack([tower(augment(inputs)), tower(augment(inputs))], axis=1)
    model = keras.Model(inputs, views)
    steps = epochs * (len(images) // batch_size)
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        1e-3, steps)), loss=lambda _, v: nt_xent(v, temperature))
    whole = len(images) // batch_size * batch_size  # every batch full: as many negatives each
    history = model.fit(as_input(images[:whole]), np.zeros(whole, np.float32),
                        batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose)
    return tower, history.history["loss"]
