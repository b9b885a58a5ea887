"""The image tower for visual similarity, and the similarity benchmark's measures."""
from __future__ import annotations

import numpy as np
import pytest

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


def test_nt_xent_is_low_when_views_agree_and_high_when_they_do_not():
    agree = np.eye(4, dtype=np.float32)[:, None, :].repeat(2, axis=1)  # each image's views equal
    swapped = agree.copy()
    swapped[:, 1] = agree[[1, 2, 3, 0], 1]  # each view paired with another image's
    low = float(np.mean(image_embedding.nt_xent(agree, 0.1)))
    high = float(np.mean(image_embedding.nt_xent(swapped, 0.1)))
    assert low < 1e-3 and high > 5
    # against the formula, computed by hand for the first view
    z = np.concatenate([swapped[:, 0], swapped[:, 1]])
    logits = z @ z.T / 0.1
    np.fill_diagonal(logits, -np.inf)
    expected = -(logits[0, 4] - np.log(np.exp(logits[0]).sum()))
    assert float(image_embedding.nt_xent(swapped, 0.1)[0]) == pytest.approx(expected, rel=1e-4)


def test_the_self_supervised_tower_learns_to_match_views_without_labels():
    images, _ = stripes(256)
    tower, losses = image_embedding.train_contrastive(images, epochs=4, batch_size=32, dim=8,
                                                      verbose=0)
    # two classes of near-identical images: the best a batch of 32 allows is about log(32) =
    # 3.47 (an image's other view is as close as the 31 of its class), chance log(63) = 4.14
    assert losses[-1] < losses[0] - 0.2 and losses[-1] < 3.6, losses
    vectors = image_embedding.embed(tower, images[:10])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
