"""Visual similarity on Fashion-MNIST: how often an image's nearest neighbours share its class.

    python -m benchmarks.similarity [--epochs 20] [--dim 64] [--seed 0]

The tower (``trainer/image_embedding.py``) trains on Fashion-MNIST's training split,
less its last 6,000 images, which decide early stopping (validation). The 10,000
test images are embedded once and each one's neighbours are searched among the
other 9,999. Per representation: precision@10 (share of the 10 nearest in the
query's class) and recall@1 (the nearest is in the class), exact search. Then the
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
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import faiss

    from catalog_data import fashion_mnist
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
        dim=args.dim, seed=args.seed)
    train_s = time.perf_counter() - started
    print(f"tower trained in {train_s:.0f} s; validation accuracy per epoch "
          f"{[round(a, 4) for a in valid_accuracy]}")

    raw = test_x.reshape(len(test_x), -1).astype(np.float32) / 255.0
    embedded = image_embedding.embed(tower, test_x)
    print(f"\nFashion-MNIST test, {len(test_x):,} images, exact search among the others")
    print("| representation | dimensions | precision@10 | recall@1 |\n|---|---|---|---|")
    exact = {}
    for name, vectors, metric in (("raw pixels (L2)", raw, "l2"),
                                  ("prodcat tower, supervised (cosine)", embedded, "ip")):
        ids = exact_neighbours(vectors, 10, metric)
        exact[name] = ids
        print(f"| {name} | {vectors.shape[1]} | {precision_at(ids, test_y, 10):.3f} | "
              f"{precision_at(ids, test_y, 1):.3f} |")
    tower_ids = exact["prodcat tower, supervised (cosine)"]
    print(f"\nHNSW (faiss, M=32, efConstruction=80) over the tower's embeddings, "
          f"{os.cpu_count()} cores")
    print("| efSearch | recall@10 vs exact | queries/s | build s | bytes/product |\n"
          "|---|---|---|---|---|")
    for row in ann_rows(embedded, tower_ids):
        print(f"| {row['ef_search']} | {row['recall']:.3f} | {row['qps']:,.0f} | "
              f"{row['build_s']:.2f} | {row['bytes']:.0f} |")


if __name__ == "__main__":
    main()
