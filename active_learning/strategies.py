"""How informative a label would be, per product: the selection strategies' scores.

Every function takes class probabilities (rows: products, columns: the exclusive
classes) or what a strategy needs besides, and returns one score per product:
**higher means label it sooner**. They work on one chunk of the pool at a time, so
a selection streams over a million-product pool holding only a chunk and the best
candidates (``active_learning/select.py``).

These few lines are written here rather than taken from small-text or
scikit-activeml: both expect the whole pool in memory and their own classifier
wrapper around a model they retrain, while prodcat scores a trained model's
predictions chunk by chunk inside the pipeline. The definitions follow Settles'
survey (least confidence, margin, entropy, vote entropy, KL to the consensus,
information density) and are checked against hand-made cases in the tests.
"""
from __future__ import annotations

import hashlib

import numpy as np

from shared_config.selection import DIVERSITY_WEIGHT, STRATEGIES

__all__ = ["DIVERSITY_WEIGHT", "STRATEGIES"]
_TINY = 1e-12


def least_confidence(probabilities: np.ndarray) -> np.ndarray:
    """1 - p(most likely class)."""
    return 1.0 - probabilities.max(axis=1)


def margin(probabilities: np.ndarray) -> np.ndarray:
    """1 - (p(best) - p(second best)): a small margin between the top two is informative."""
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    return 1.0 - (top_two[:, 1] - top_two[:, 0])


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """-sum p log p, in nats."""
    p = np.clip(probabilities, _TINY, 1.0)
    return -(probabilities * np.log(p)).sum(axis=1)


def vote_entropy(members: list[np.ndarray]) -> np.ndarray:
    """The entropy of the committee members' votes (each member's most likely class)."""
    classes = members[0].shape[1]
    votes = np.stack([np.eye(classes)[m.argmax(axis=1)] for m in members]).mean(axis=0)
    return entropy(votes)


def kl_to_consensus(members: list[np.ndarray]) -> np.ndarray:
    """The members' mean KL divergence from their consensus (the mean of their
    distributions): how much the committee disagrees, not only about the top class."""
    consensus = np.clip(np.mean(members, axis=0), _TINY, 1.0)
    return np.mean([(m * (np.log(np.clip(m, _TINY, 1.0)) - np.log(consensus))).sum(axis=1)
                    for m in members], axis=0)


def committee(members: list[np.ndarray]) -> np.ndarray:
    """Query by committee: KL to the consensus (vote entropy ties too often with few members)."""
    return kl_to_consensus(members)


def information_density(uncertainty: np.ndarray, density: np.ndarray,
                        beta: float = 1.0) -> np.ndarray:
    """Uncertainty weighted by how typical the product is of the pool (Settles & Craven):
    an outlier is uncertain but teaches little."""
    return uncertainty * np.clip(density, 0.0, None) ** beta


def random_scores(ids, seed: int) -> np.ndarray:
    """A uniform score in [0, 1) from the id and the seed: the same product gets the same
    score in every chunk order, so streaming and resuming do not change the draw."""
    return np.array([int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode(
        "utf-8", "surrogatepass")).digest()[:8], "big") / 2**64 for i in ids])


def diverse_batch(scores: np.ndarray, embeddings: np.ndarray, groups, size: int,
                  weight: float = DIVERSITY_WEIGHT) -> list[int]:
    """Pick ``size`` rows, one product group at most once, trading score for diversity.

    Ranked batch mode (Cardoso et al.): each pick maximises ``weight * (1 - similarity to
    the closest pick so far) + (1 - weight) * score rank``, so one batch does not spend
    its labels on the same product relisted by five affiliates or on five near-copies.
    ``embeddings`` are L2-normalised rows (cosine similarity is a dot product).
    """
    n = len(scores)
    if n == 0 or size <= 0:
        return []
    rank = np.empty(n)
    rank[np.argsort(scores, kind="stable")] = np.arange(n) / max(1, n - 1)
    closest = np.zeros(n)
    available = np.ones(n, bool)
    picked: list[int] = []
    group_ids = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1]
    while len(picked) < size and available.any():
        value = np.where(available, weight * (1 - closest) + (1 - weight) * rank, -np.inf)
        best = int(np.argmax(value))
        picked.append(best)
        available &= group_ids != group_ids[best]
        closest = np.maximum(closest, embeddings @ embeddings[best])
    return picked
