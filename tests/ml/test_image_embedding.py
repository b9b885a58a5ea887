"""The image tower for visual similarity, and the similarity benchmark's measures."""
from __future__ import annotations

import numpy as np

from benchmarks.similarity import drop_self, exact_neighbours, precision_at
from trainer import image_embedding


def stripes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of noisy 28x28 images: horizontal or vertical stripes."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    base = np.zeros((28, 28), dtype=np.float32)
    base[::4] = 1.0
    images = np.stack([base if y == 0 else base.T for y in labels])
    images = np.clip(images * 200 + rng.normal(0, 40, images.shape), 0, 255).astype(np.uint8)
    return images, labels


def test_the_tower_gives_unit_vectors_and_learns_same_class_neighbours():
    images, labels = stripes(64)
    tower, _ = image_embedding.train_supervised(images, labels, epochs=4, batch_size=16, dim=8,
                                                verbose=0)
    test_images, test_labels = stripes(40, seed=1)
    vectors = image_embedding.embed(tower, test_images)
    assert vectors.shape == (40, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    ids = exact_neighbours(vectors, 5, "ip")
    assert precision_at(ids, test_labels, 5) > 0.9


def test_neighbours_never_list_the_query_itself():
    ids = np.array([[0, 3, 2], [2, 1, 0], [2, 0, 1]])
    np.testing.assert_array_equal(drop_self(ids, 2), [[3, 2], [2, 0], [0, 1]])
    vectors = np.eye(4, dtype=np.float32)
    found = exact_neighbours(vectors, 2, "ip")
    assert all(i not in row for i, row in enumerate(found))


def test_precision_at_k_on_a_hand_made_case():
    labels = np.array([0, 0, 1, 1])
    ids = np.array([[1, 2], [2, 3], [3, 0], [0, 1]])
    assert precision_at(ids, labels, 1) == 0.5  # 0->1 right, 1->2 wrong, 2->3 right, 3->0 wrong
    assert precision_at(ids, labels, 2) == 0.25
