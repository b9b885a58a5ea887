"""Embeddings as words: the thesis's tokenised approach to similarity in a full-text store.

Each dimension of an embedding becomes two tokens at two precisions (after Rygl et al.,
"Semantic vector encoding and similarity search using fulltext search engines", 2017):
the dimension is normalised to 0..1 (its value's rank under a normal with the
dimension's mean and spread, so its 10 coarse intervals are about equally full),
then cut into 10 intervals of 0.1 and 100 of 0.01: a value of 0.46 in dimension 1
gives ``d1_4`` and ``d1_46``. A product's tokens go in one whitespace-analysed text
field (``TOKEN_FIELD``, mapped in ``store/client.py``); a ``match`` query with another product's tokens ranks
products by their shared tokens, the rare (fine) ones weighing most. Every product
has the same number of tokens, each once, so BM25 reduces to the sum of the shared
tokens' IDF: ``shared_token_scores`` computes that same ranking offline.

The normalisation (``Tokeniser.fit``) is kept in JSON with the run; tokenising is a
pure function of it and the vector, so the same vector always gives the same tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.special import ndtr

TOKEN_FIELD = "image_tokens"
PRECISIONS = (10, 100)  # intervals per dimension: coarse, fine


@dataclass(frozen=True)
class Tokeniser:
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, vectors: np.ndarray) -> Tokeniser:
        """Each dimension's mean and spread, from a sample of the embeddings."""
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.ndim != 2 or len(vectors) < 2:
            raise ValueError("fit needs a [n >= 2, dim] array of embeddings")
        return cls(tuple(float(v) for v in vectors.mean(0)),
                   tuple(float(max(v, 1e-6)) for v in vectors.std(0)))

    @classmethod
    def from_dict(cls, data: dict) -> Tokeniser:
        mean, std = data.get("mean"), data.get("std")
        if not isinstance(mean, list) or not isinstance(std, list) or len(mean) != len(std) or \
                not all(isinstance(x, int | float) and math.isfinite(x) for x in mean + std) or \
                min(std, default=0) <= 0:
            raise ValueError("a tokeniser needs 'mean' and 'std' lists of one length, std > 0")
        return cls(tuple(map(float, mean)), tuple(map(float, std)))

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "precisions": list(PRECISIONS)}

    @property
    def dim(self) -> int:
        return len(self.mean)

    def codes(self, vectors: np.ndarray) -> np.ndarray:
        """``[n, dim, len(PRECISIONS)]`` interval numbers."""
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected [n, {self.dim}] vectors, got {vectors.shape}")
        unit = ndtr((vectors - np.array(self.mean)) / np.array(self.std))
        return np.stack([np.minimum((unit * p).astype(np.int64), p - 1) for p in PRECISIONS],
                        axis=-1)

    def tokens(self, vectors: np.ndarray) -> list[str]:
        """One space-separated token string per vector: ``d{dim}_{interval}`` per precision."""
        return [" ".join(f"d{d}_{code}" for d, row in enumerate(per_dim) for code in row)
                for per_dim in self.codes(vectors)]

    def token_matrix(self, vectors: np.ndarray) -> sparse.csr_matrix:
        """``[n, dim · (10 + 100)]`` 0/1: which tokens each vector has (columns per dimension:
        the coarse intervals, then the fine ones)."""
        codes = self.codes(vectors)
        width = sum(PRECISIONS)
        offsets = np.cumsum((0,) + PRECISIONS[:-1])
        columns = (np.arange(self.dim)[None, :, None] * width + offsets + codes).reshape(
            len(codes), -1)
        rows = np.repeat(np.arange(len(codes)), columns.shape[1])
        return sparse.csr_matrix((np.ones(columns.size, np.float32), (rows, columns.ravel())),
                                 shape=(len(codes), self.dim * width))


def bm25_idf(matrix: sparse.csr_matrix) -> np.ndarray:
    """Lucene's BM25 IDF per token: log(1 + (N − df + 0.5) / (df + 0.5))."""
    n = matrix.shape[0]
    df = np.asarray((matrix > 0).sum(0)).ravel()
    return np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)


def shared_token_scores(queries: sparse.csr_matrix, documents: sparse.csr_matrix,
                        idf: np.ndarray) -> np.ndarray:
    """``[queries, documents]``: the sum of the IDF of the tokens each pair shares."""
    return np.asarray((queries.multiply(idf[None, :]) @ documents.T).todense())
