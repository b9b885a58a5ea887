"""Visual similarity on Fashion-MNIST: how often an image's nearest neighbours share its class.

    python -m benchmarks.similarity [--epochs 25] [--dim 64] [--margin 0.2] [--seed 0]

The tower (``trainer/image_embedding.py``) trains on Fashion-MNIST's training split,
less 6,000 images chosen at random (validation): they decide early stopping and
whether mirrored test-time augmentation is used (the variant with the better
validation precision@10 is "prodcat's embedding"). The 10,000 test images are then
embedded once and each one's neighbours are searched among the other 9,999. Per
representation: precision@10 (share of the 10 nearest in the query's class),
recall@1 (the nearest is in the class) and triplet accuracy (over 100,000 random
(anchor, same class, other class) triplets, how often the anchor is closer to the
same-class image), exact search; the tokenised embeddings (``similarity/tokens.py``)
rank by the BM25 score a full-text store gives their shared tokens. Then the
approximate index (faiss HNSW over the embeddings) against exact search: recall@10
(share of the exact 10 nearest it finds), queries per second on this machine's
cores, build time, and bytes per product (the serialised index over its products).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

VALID = 6_000


def exact_neighbours(vectors: np.ndarray, k: int, metric: str) -> np.ndarray:
    """``[n, k]`` ids of each vector's k nearest others (itself left out)."""
    import faiss

    index = (faiss.IndexFlatIP if metric == "ip" else faiss.IndexFlatL2)(vectors.shape[1])
    index.add(vectors)
    _, ids = index.search(vectors, k + 1)
    return drop_self(ids, k)


def drop_self(ids: np.ndarray, k: int) -> np.ndarray:
    """Each row without its own id (wherever the search put it), cut to k."""
    rows = np.arange(len(ids))[:, None]
    kept = np.where(ids == rows, -1, ids)
    return np.array([r[r >= 0][:k] for r in kept])


def precision_at(ids: np.ndarray, labels: np.ndarray, k: int) -> float:
    return float(np.mean(labels[ids[:, :k]] == labels[:, None]))


def triplets(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``[n, 3]`` (anchor, another of its class, one of another class), drawn at random."""
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    anchors = rng.integers(0, len(labels), n)
    positives, negatives = np.empty(n, np.int64), np.empty(n, np.int64)
    for i, a in enumerate(anchors):
        same = by_class[labels[a]]
        positives[i] = same[(np.searchsorted(same, a) + rng.integers(1, len(same))) % len(same)]
        other = rng.integers(0, len(labels))
        while labels[other] == labels[a]:
            other = rng.integers(0, len(labels))
        negatives[i] = other
    return np.stack([anchors, positives, negatives], axis=1)


def triplet_accuracy(similarity, found: np.ndarray) -> float:
    """How often ``similarity(anchor, positive) > similarity(anchor, negative)``."""
    return float(np.mean(similarity(found[:, 0], found[:, 1]) >
                         similarity(found[:, 0], found[:, 2])))


def token_neighbours(tokens, k: int, chunk: int = 1000) -> tuple[np.ndarray, callable]:
    """Each token matrix row's k best others by shared-token BM25, and a pair scorer."""
    from similarity.tokens import bm25_idf, shared_token_scores

    idf = bm25_idf(tokens)
    ids = []
    for start in range(0, tokens.shape[0], chunk):
        scores = shared_token_scores(tokens[start:start + chunk], tokens, idf)
        scores[np.arange(len(scores)), np.arange(start, start + len(scores))] = -np.inf
        ids.append(np.argsort(-scores, axis=1, kind="stable")[:, :k])

    def pair(a, b):
        return np.asarray(tokens[a].multiply(tokens[b]) @ idf).ravel()

    return np.concatenate(ids), pair


def ann_rows(vectors: np.ndarray, exact: np.ndarray, k: int = 10) -> list[dict]:
    """HNSW (M=32) at a few search depths: recall@k against exact, queries/s, build time."""
    import faiss

    started = time.perf_counter()
    index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(vectors)
    build = time.perf_counter() - started
    size = faiss.serialize_index(index).nbytes / len(vectors)
    rows = []
    for ef in (16, 32, 64, 128):
        index.hnsw.efSearch = ef
        started = time.perf_counter()
        _, ids = index.search(vectors, k + 1)
        seconds = time.perf_counter() - started
        found = drop_self(ids, k)
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact, strict=True)])
        rows.append({"ef_search": ef, "recall": float(recall), "qps": len(vectors) / seconds,
                     "build_s": build, "bytes": size})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.similarity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--margin", type=float, default=0.2, help="CosFace margin")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import faiss

    from catalog_data import fashion_mnist
    from similarity.tokens import Tokeniser
    from trainer import image_embedding

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    train_x, train_y = fashion_mnist.load("train")
    test_x, test_y = fashion_mnist.load("t10k")
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(train_x))
    fit, valid = order[:-VALID], order[-VALID:]
    started = time.perf_counter()
    tower, valid_accuracy = image_embedding.train_supervised(
        train_x[fit], train_y[fit], (train_x[valid], train_y[valid]), epochs=args.epochs,
        dim=args.dim, margin=args.margin, seed=args.seed)
    train_s = time.perf_counter() - started
    print(f"tower trained in {train_s:.0f} s; validation accuracy per epoch "
          f"{[round(a, 4) for a in valid_accuracy]}")
    on_valid = {flip: precision_at(exact_neighbours(image_embedding.embed(
        tower, train_x[valid], flip=flip), 10, "ip"), train_y[valid], 10) for flip in (False, True)}
    flip = on_valid[True] > on_valid[False]
    print(f"validation precision@10: {on_valid[False]:.4f} plain, {on_valid[True]:.4f} with "
          f"mirrored test-time augmentation: prodcat's embedding is {'with' if flip else 'without'}"
          " it")

    raw = test_x.reshape(len(test_x), -1).astype(np.float32) / 255.0
    variants = {flip_: image_embedding.embed(tower, test_x, flip=flip_) for flip_ in (False, True)}
    embedded = variants[flip]
    tokeniser = Tokeniser.fit(image_embedding.embed(tower, train_x[fit][:20_000], flip=flip))
    found = triplets(test_y, 100_000, args.seed)
    print(f"\nFashion-MNIST test, {len(test_x):,} images, exact search among the others; "
          f"triplet accuracy over {len(found):,} triplets")
    print("| representation | dimensions | precision@10 | recall@1 | triplet accuracy |\n"
          "|---|---|---|---|---|")
    rows = [("raw pixels (L2)", raw, "l2"),
            ("prodcat tower, supervised (cosine)", variants[False], "ip"),
            ("prodcat tower + mirrored test-time augmentation", variants[True], "ip")]
    for name, vectors, metric in rows:
        ids = exact_neighbours(vectors, 10, metric)
        if metric == "ip":
            def similarity(a, b, v=vectors):
                return np.sum(v[a] * v[b], axis=1)
        else:
            def similarity(a, b, v=vectors):
                return -np.sum((v[a] - v[b]) ** 2, axis=1)
        print(f"| {name} | {vectors.shape[1]} | {precision_at(ids, test_y, 10):.3f} | "
              f"{precision_at(ids, test_y, 1):.3f} | {triplet_accuracy(similarity, found):.3f} |")
    tokens = tokeniser.token_matrix(embedded)
    ids, pair = token_neighbours(tokens, 10)
    print(f"| tokenised prodcat embedding, BM25 over shared tokens | {tokens.shape[1]} tokens, "
          f"{int(tokens[0].sum())} per image | {precision_at(ids, test_y, 10):.3f} | "
          f"{precision_at(ids, test_y, 1):.3f} | {triplet_accuracy(pair, found):.3f} |")
    tower_ids = exact_neighbours(embedded, 10, "ip")
    print(f"\nHNSW (faiss, M=32, efConstruction=80) over prodcat's embeddings, "
          f"{os.cpu_count()} cores")
    print("| efSearch | recall@10 vs exact | queries/s | build s | bytes/product |\n"
          "|---|---|---|---|---|")
    for row in ann_rows(embedded, tower_ids):
        print(f"| {row['ef_search']} | {row['recall']:.3f} | {row['qps']:,.0f} | "
              f"{row['build_s']:.2f} | {row['bytes']:.0f} |")


if __name__ == "__main__":
    main()
