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
    usable = np.flatnonzero([len(by_class[c]) > 1 for c in labels])  # a class of one: no pair
    anchors = usable[rng.integers(0, len(usable), n)]
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
    """How often ``similarity(anchor, positive) > similarity(anchor, negative)``, a tie
    counting half (two empty titles are neither close nor far)."""
    positive = similarity(found[:, 0], found[:, 1])
    negative = similarity(found[:, 0], found[:, 2])
    return float(np.mean((positive > negative) + 0.5 * (positive == negative)))


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


def pair_similarity(vectors: np.ndarray, metric: str):
    """(rows a, rows b) -> similarity, larger is closer."""
    if metric == "ip":
        return lambda a, b: np.sum(vectors[a] * vectors[b], axis=1)
    return lambda a, b: -np.sum((vectors[a] - vectors[b]) ** 2, axis=1)


def print_row(name: str, size: str, ids: np.ndarray, labels: np.ndarray, triplet: float) -> None:
    print(f"| {name} | {size} | {precision_at(ids, labels, 10):.3f} | "
          f"{precision_at(ids, labels, 1):.3f} | {triplet:.3f} |")


def representation_rows(rows, labels: np.ndarray, found: np.ndarray, tokens=None) -> None:
    """One table row per ``(name, vectors, metric)``, then the tokenised embedding's."""
    print("| representation | dimensions | precision@10 | recall@1 | triplet accuracy |\n"
          "|---|---|---|---|---|")
    for name, vectors, metric in rows:
        ids = exact_neighbours(vectors, 10, metric)
        print_row(name, str(vectors.shape[1]), ids, labels,
                  triplet_accuracy(pair_similarity(vectors, metric), found))
    if tokens is not None:
        name, matrix = tokens
        ids, pair = token_neighbours(matrix, 10)
        print_row(name, f"{matrix.shape[1]} tokens, {int(matrix[0].sum())} per image", ids,
                  labels, triplet_accuracy(pair, found))


def chosen_flip(tower, images: np.ndarray, labels: np.ndarray, name: str) -> bool:
    """Mirrored test-time augmentation or not: whichever gives the better validation
    precision@10."""
    from trainer import image_embedding

    on_valid = {flip: precision_at(exact_neighbours(image_embedding.embed(
        tower, images, flip=flip), 10, "ip"), labels, 10) for flip in (False, True)}
    flip = on_valid[True] > on_valid[False]
    print(f"{name}: validation precision@10 {on_valid[False]:.4f} plain, {on_valid[True]:.4f} "
          f"with mirrored test-time augmentation: {'with' if flip else 'without'} it")
    return flip


def neighbour_grid(images: np.ndarray, ids: np.ndarray, labels: np.ndarray, names, path: str,
                   queries: int = 8, shown: int = 8, seed: int = 0) -> None:
    """A PNG: random queries (left) and their nearest neighbours, a red frame where the
    neighbour is of another class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(images), queries, replace=False)
    figure, axes = plt.subplots(queries, shown + 1, figsize=(1.1 * (shown + 1), 1.2 * queries))
    for row, query in enumerate(chosen):
        for column, index in enumerate([query, *ids[query, :shown]]):
            axis = axes[row, column]
            axis.imshow(images[index], cmap="gray_r")
            axis.set_xticks([])
            axis.set_yticks([])
            wrong = column > 0 and labels[index] != labels[query]
            for spine in axis.spines.values():
                spine.set_color("red" if wrong else "black")
                spine.set_linewidth(2.5 if wrong else 0.5)
            if column == 0:
                axis.set_ylabel(names[labels[query]], fontsize=7)
    figure.suptitle("query | its nearest neighbours (red: another class)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def fashion_mnist_benchmark(args) -> None:
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
    towers = {}
    if "supervised" in args.variants:
        started = time.perf_counter()
        tower, valid_accuracy = image_embedding.train_supervised(
            train_x[fit], train_y[fit], (train_x[valid], train_y[valid]), epochs=args.epochs,
            dim=args.dim, margin=args.margin, seed=args.seed)
        print(f"supervised tower trained in {time.perf_counter() - started:.0f} s; validation "
              f"accuracy per epoch {[round(a, 4) for a in valid_accuracy]}")
        towers["supervised (CosFace)"] = tower
    if "contrastive" in args.variants:
        started = time.perf_counter()
        tower, losses = image_embedding.train_contrastive(
            train_x[fit], epochs=args.contrastive_epochs, dim=args.dim, seed=args.seed)
        print(f"self-supervised tower trained in {time.perf_counter() - started:.0f} s (no "
              f"labels); NT-Xent per epoch {[round(x, 3) for x in losses]}")
        towers["self-supervised (SimCLR)"] = tower
    flips = {name: chosen_flip(tower, train_x[valid], train_y[valid], name)
             for name, tower in towers.items()}
    vectors = {name: image_embedding.embed(tower, test_x, flip=flips[name])
               for name, tower in towers.items()}
    first = next(iter(towers))  # prodcat's embedding: the first variant asked for
    tokeniser = Tokeniser.fit(image_embedding.embed(towers[first], train_x[fit][:20_000],
                                                    flip=flips[first]))
    found = triplets(test_y, 100_000, args.seed)
    print(f"\nFashion-MNIST test, {len(test_x):,} images, exact search among the others; "
          f"triplet accuracy over {len(found):,} random triplets")
    raw = test_x.reshape(len(test_x), -1).astype(np.float32) / 255.0
    representation_rows(
        [("raw pixels (L2)", raw, "l2")]
        + [(f"prodcat tower, {name}{', mirrored TTA' if flips[name] else ''} (cosine)",
            vectors[name], "ip") for name in towers],
        test_y, found, (f"tokenised tower ({first}), BM25 over shared tokens",
                        tokeniser.token_matrix(vectors[first])))
    embedded = vectors[first]
    tower_ids = exact_neighbours(embedded, 10, "ip")
    if args.grid:
        neighbour_grid(test_x, tower_ids, test_y, fashion_mnist.LABELS, args.grid, seed=args.seed)
        print(f"\nexample neighbours: {args.grid}")
    print(f"\nHNSW (faiss, M=32, efConstruction=80) over the {first} tower's embeddings, "
          f"{os.cpu_count()} cores")
    print("| efSearch | recall@10 vs exact | queries/s | build s | bytes/product |\n"
          "|---|---|---|---|---|")
    for row in ann_rows(embedded, tower_ids):
        print(f"| {row['ef_search']} | {row['recall']:.3f} | {row['qps']:,.0f} | "
              f"{row['build_s']:.2f} | {row['bytes']:.0f} |")
    print("\nIVF-PQ (faiss, the large-group index of similarity/neighbours.py: 4·k candidates "
          "re-ranked exactly) over the same")
    print("| lists | nprobe | recall@10 vs exact | queries/s | build s | bytes/product |\n"
          "|---|---|---|---|---|---|")
    for row in ivfpq_rows(embedded, tower_ids):
        print(f"| {row['lists']} | {row['nprobe']} | {row['recall']:.3f} | {row['qps']:,.0f} | "
              f"{row['build_s']:.2f} | {row['bytes']:.0f} |")


def catalogue_products() -> tuple[list[dict], np.ndarray, list[str], np.ndarray]:
    """The demo catalogue's listings with an image, their images, true categories, and which
    is the first listing of its real product (listings of a product share its picture:
    evaluating on copies would flatter every image row)."""
    import gzip
    import json
    from urllib.parse import urlparse

    from PIL import Image

    from catalog_data import reviews_catalog

    directory = reviews_catalog.default_dir()
    if not reviews_catalog.is_current(directory):
        reviews_catalog.build(directory)
    with gzip.open(directory / "ground_truth.jsonl.gz", "rt") as lines:
        truth = {row["id"]: row["category"] for row in map(json.loads, lines)}
    chosen, pictures, first, seen, decoded = [], [], [], set(), {}
    with gzip.open(directory / "catalog.jsonl.gz", "rt") as lines:
        for product in map(json.loads, lines):
            path = urlparse(product["image"]).path if product["image"] else ""
            if not path or not os.path.exists(path):
                continue
            if path not in decoded:
                decoded[path] = np.asarray(Image.open(path).convert("L"), dtype=np.uint8)
            first.append(product["group_id"] not in seen)
            seen.add(product["group_id"])
            chosen.append(product)
            pictures.append(decoded[path])
    return chosen, np.stack(pictures), [truth[p["id"]] for p in chosen], np.array(first)


def catalogue_benchmark(args) -> None:
    """Image, tokenised and title neighbours among the demo catalogue's products."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from shared_config.splits import split_of
    from similarity.tokens import Tokeniser
    from trainer import image_embedding

    products, pictures, truth, first = catalogue_products()
    splits = np.array([split_of(p, "group_id") for p in products])
    train = np.flatnonzero(splits == "train")
    evaluated = np.flatnonzero((splits != "train") & first)
    # the tower learns as the embed verb does here: from the products with one rule label
    rules = sorted({p["rule_labels"][0] for p in products if len(p["rule_labels"]) == 1})
    labelled = [i for i in train if len(products[i]["rule_labels"]) == 1]
    rule_ids = np.array([rules.index(products[i]["rule_labels"][0]) for i in labelled])
    tower, _ = image_embedding.train_supervised(pictures[labelled], rule_ids, epochs=args.epochs,
                                                dim=args.dim, margin=args.margin, seed=args.seed,
                                                verbose=0)
    vectors = image_embedding.embed(tower, pictures[evaluated], flip=True)
    # ... or from the exact labels of 2% of the training listings, as make demo reveals them
    rng = np.random.default_rng(args.seed)
    exact = rng.choice(train, max(2, len(products) // 50), replace=False)
    classes = sorted({truth[i] for i in exact})
    exact_tower, _ = image_embedding.train_supervised(
        pictures[exact], np.array([classes.index(truth[i]) for i in exact]), epochs=args.epochs,
        dim=args.dim, margin=args.margin, seed=args.seed, verbose=0)
    exact_vectors = image_embedding.embed(exact_tower, pictures[evaluated], flip=True)
    tokeniser = Tokeniser.fit(image_embedding.embed(tower, pictures[train], flip=True))
    titles = TfidfVectorizer(sublinear_tf=True).fit([p["title"] for p in products[::10]])
    title_vectors = titles.transform([products[i]["title"] for i in evaluated])
    title_vectors = np.asarray(title_vectors.todense(), dtype=np.float32)
    raw = pictures[evaluated].reshape(len(evaluated), -1).astype(np.float32) / 255.0
    for level, name in ((2, "category (Department > Class)"), (1, "department")):
        names = [" > ".join(truth[i].split(" > ")[:level]) for i in evaluated]
        labels = np.unique(names, return_inverse=True)[1]
        found = triplets(labels, 20_000, args.seed)
        print(f"\ndemo catalogue: {len(evaluated)} real products with an image in the valid and "
              f"test splits (one listing each; the tower trained on the {len(labelled)} train-split "
              f"listings with one rule label, or on 2% of the train-split listings' true "
              f"categories), neighbours judged by the true {name}")
        representation_rows([("raw pixels (L2)", raw, "l2"),
                             ((f"prodcat tower, rule-supervised ({len(rules)} rule classes), "
                              "mirrored TTA (cosine)"), vectors, "ip"),
                             ((f"prodcat tower, supervised by {len(exact)} exact labels, mirrored "
                              "TTA (cosine)"), exact_vectors, "ip"),
                             ("title TF-IDF (cosine; ES title matching)", title_vectors, "ip")],
                            labels, found, ("tokenised tower, BM25 over shared tokens",
                                            tokeniser.token_matrix(vectors)))


def ivfpq_rows(vectors: np.ndarray, exact: np.ndarray, k: int = 10) -> list[dict]:
    """The IVF-PQ index ``similarity/neighbours.py`` builds for large groups, at a few nprobe."""
    import faiss

    from similarity.neighbours import IVFPQ_RERANK, build_index, search

    started = time.perf_counter()
    index = build_index(vectors, "ivfpq", k)
    build = time.perf_counter() - started
    size = faiss.serialize_index(index).nbytes / len(vectors)
    ivf = faiss.extract_index_ivf(index)
    rows = []
    for nprobe in (8, 32, 128):
        ivf.nprobe = min(nprobe, ivf.nlist)
        started = time.perf_counter()
        _, found = search(index, vectors, vectors, k, IVFPQ_RERANK)
        seconds = time.perf_counter() - started
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact, strict=True)])
        rows.append({"nprobe": ivf.nprobe, "lists": ivf.nlist, "recall": float(recall),
                     "qps": len(vectors) / seconds, "build_s": build, "bytes": size})
    return rows


def random_index_benchmark(n: int, seed: int) -> None:
    """The indexes over n random unit vectors: no structure, the hardest case for an ANN."""
    vectors = np.random.default_rng(seed).normal(size=(n, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    exact = exact_neighbours(vectors, 10, "ip")
    print(f"{n:,} random 64-d unit vectors, {os.cpu_count()} cores")
    print("| index | recall@10 vs exact | queries/s | build s | bytes/product |\n"
          "|---|---|---|---|---|")
    for row in ann_rows(vectors, exact):
        print(f"| HNSW M=32, efSearch {row['ef_search']} | {row['recall']:.3f} | "
              f"{row['qps']:,.0f} | {row['build_s']:.2f} | {row['bytes']:.0f} |")
    for row in ivfpq_rows(vectors, exact):
        print(f"| IVF-PQ {row['lists']} lists, nprobe {row['nprobe']}, 4·k re-ranked | "
              f"{row['recall']:.3f} | {row['qps']:,.0f} | {row['build_s']:.2f} | "
              f"{row['bytes']:.0f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.similarity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="supervised",
                        help="comma-separated towers: supervised, contrastive (default "
                             "supervised); the first is the one tokenised and indexed")
    parser.add_argument("--epochs", type=int, default=25, help="supervised tower, at most")
    parser.add_argument("--contrastive-epochs", type=int, default=15)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--margin", type=float, default=0.2, help="CosFace margin")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", metavar="PNG", help="write example neighbours here")
    parser.add_argument("--catalogue", action="store_true",
                        help="measure on the demo catalogue instead of Fashion-MNIST")
    parser.add_argument("--random-index", type=int, metavar="N",
                        help="measure only the indexes, over N random unit vectors")
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(args.variants) - {"supervised", "contrastive"}
    if unknown or not args.variants:
        parser.error(f"unknown variants {sorted(unknown)}; use supervised, contrastive")
    if args.random_index:
        random_index_benchmark(args.random_index, args.seed)
    elif args.catalogue:
        catalogue_benchmark(args)
    else:
        fashion_mnist_benchmark(args)


if __name__ == "__main__":
    main()
