"""Each product's k nearest neighbours by image, within its group, ready for the broker.

    python -m similarity.neighbours --run-id R [--k 100] [--level 2] [--index auto]
                                    [--with-vectors]

Reads the run's ``embeddings/part-*.npz`` (``trainer/embed.py``) and writes
``similar/part-NNNNN.jsonl.gz``, one line per product that has an image::

    {"id": ..., "run_id": ..., "version": ..., "similar_group": "women/dresses",
     "similar_level": 2, "similar_products": [{"id": ..., "score": 0.93}, ...],
     "image_tokens": "d0_4 d0_47 ..."}

``image_tokens`` (``similarity/tokens.py``) goes on the listings indexed only — one
per real product, as neighbours are products — and is emptied on the others, so a
token search in the store finds each product once.

**Groups.** ``--level N`` restricts neighbours to products whose predicted category
path starts with the same N names (a shorter path: the same whole path); ``--level 0``
searches the whole catalogue. Products without a predicted path form their own group,
``NO_PREDICTION``. A product is never its own neighbour; a group of n products gives
each at most n − 1. Neighbours are *products*: each real product (the feed's group id,
``shared_config/splits.py``) is indexed once, by its first listing, and a listing's
neighbours never include its own product — a feed lists one product under several
affiliates, usually with one picture, and a list of 20 copies of one product (or of
itself) would help nobody. ``--same-product`` indexes every listing instead.

**Memory.** Two passes over the shards. The first spills each shard's vectors, group
by group, to local temporary files; the second loads one group at a time, indexes and
searches it, and streams its lines out. Memory is bounded by the largest group (plus a
shard), not by the catalogue.

**Index per group** (``--index auto``): exact inner-product search (``flat``) up to
``FLAT_MAX`` products — exact, and as fast as an approximate index at that size;
HNSW (``hnsw``, M=32) up to ``HNSW_MAX``; above that IVF-PQ (``ivfpq``: 4·√n lists,
``dim/4`` sub-quantisers of 8 bits, 16 bytes per 64-d product), whose 4·k candidates are
re-ranked by their exact inner products. For every approximate
group, ``RECALL_SAMPLE`` random queries are also searched exactly: the stats report
recall@k against exact search.

``--with-vectors`` adds each product's vector (``image_embedding``) for a store that
answers ``knn`` queries itself (Elasticsearch ``dense_vector``; ``store/vectors.py``).
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import tempfile
import time
from collections import Counter, defaultdict

import numpy as np

from shared_config import storage
from shared_config.cli import finish_stage, run_paths, setup_logging
from shared_config.paths import RunPaths
from shared_config.runs import next_prediction_version
from similarity.embeddings import TOKENISER_FILE, read_shard
from similarity.embeddings import shards as embedding_shards
from similarity.tokens import Tokeniser

log = logging.getLogger("prodcat.similarity")
INDEX_TYPES = ("auto", "flat", "hnsw", "ivfpq")
FLAT_MAX, HNSW_MAX = 20_000, 2_000_000
NO_PREDICTION = "(no prediction)"
GLOBAL = "(all)"
MAX_K = 1000
RECALL_SAMPLE = 200
IVFPQ_RERANK = 4  # IVF-PQ shortlists 4·k candidates; exact inner products choose among them
QUERY_CHUNK = 10_000
RECORDS_PER_SHARD = 100_000


def group_of(path: list[str], level: int) -> str:
    """The restriction group of a product with this predicted category path."""
    if level == 0:
        return GLOBAL
    return "/".join(path[:level]) if path else NO_PREDICTION


def index_type(size: int, wanted: str = "auto") -> str:
    if wanted not in INDEX_TYPES:
        raise ValueError(f"unknown index type {wanted!r}; use one of {INDEX_TYPES}")
    if wanted != "auto":
        return wanted
    return "flat" if size <= FLAT_MAX else "hnsw" if size <= HNSW_MAX else "ivfpq"


def build_index(vectors: np.ndarray, kind: str, k: int, seed: int = 0):
    """A faiss inner-product index over ``vectors`` (unit vectors: cosine similarity)."""
    import faiss

    n, dim = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = max(64, 2 * (k + 1))
    else:
        lists = max(1, min(int(4 * np.sqrt(n)), n // 39))  # faiss wants >= 39 points per list
        sub = max(1, dim // 4) if dim % 4 == 0 else 1
        index = faiss.index_factory(dim, f"IVF{lists},PQ{sub}x8", faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = vectors[rng.choice(n, min(n, max(256 * lists, 10_000)), replace=False)]
        index.train(sample)
        faiss.extract_index_ivf(index).nprobe = min(lists, 128)  # README: recall on random data
    index.add(vectors)
    return index


def search(index, base: np.ndarray, queries: np.ndarray, k: int, rerank: int = 1,
           base_keys: np.ndarray | None = None,
           query_keys: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, rows of base)`` of each query's k nearest base vectors, leaving out the one
    whose key is the query's (its own row, or its product's representative; -1 rows where
    there are fewer). Keys default to row numbers: ``queries`` is then ``base`` itself. With
    ``rerank`` > 1 the index proposes ``rerank``·k candidates and their exact inner products
    (the vectors are in memory anyway) choose among them: PQ's coarse scores only shortlist."""
    base_keys = np.arange(len(base)) if base_keys is None else base_keys
    query_keys = np.arange(len(queries)) if query_keys is None else query_keys
    scores, rows = [], []
    wanted = min(len(base), rerank * k + 1)
    for start in range(0, len(queries), QUERY_CHUNK):
        chunk = queries[start:start + QUERY_CHUNK]
        found_scores, found = index.search(chunk, wanted)
        if rerank > 1:
            exact = np.einsum("qd,qkd->qk", chunk, base[np.maximum(found, 0)])
            found_scores = np.where(found >= 0, exact, -np.inf)
            order = np.argsort(-found_scores, axis=1, kind="stable")
            found = np.take_along_axis(found, order, axis=1)
            found_scores = np.take_along_axis(found_scores, order, axis=1)
        own = query_keys[start:start + len(chunk)][:, None]
        keep = (found >= 0) & (base_keys[np.maximum(found, 0)] != own)
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept first, order unchanged
        taken = np.take_along_axis(keep, order, axis=1)
        rows.append(np.where(taken, np.take_along_axis(found, order, axis=1), -1))
        scores.append(np.where(taken, np.take_along_axis(found_scores, order, axis=1), 0.0))
    return np.concatenate(scores), np.concatenate(rows)


def sampled_recall(base: np.ndarray, queries: np.ndarray, rows: np.ndarray, k: int,
                   base_keys: np.ndarray, query_keys: np.ndarray, seed: int = 0) -> float:
    """Recall@k of the found rows against exact search (under the same exclusion), on
    ``RECALL_SAMPLE`` random queries."""
    rng = np.random.default_rng(seed)
    hits = []
    for query in rng.choice(len(queries), min(RECALL_SAMPLE, len(queries)), replace=False):
        scores = base @ queries[query]
        scores[base_keys == query_keys[query]] = -np.inf
        truth = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        truth = {int(t) for t in truth if np.isfinite(scores[t])}
        hits.append(len(truth & set(rows[query].tolist())) / max(1, len(truth)))
    return float(np.mean(hits))


def representatives(products: np.ndarray, same_product: bool) -> tuple[np.ndarray, np.ndarray,
                                                                       np.ndarray]:
    """``(rows indexed, their keys, each row's key)``: one listing per real product (its first),
    keyed by product; with ``same_product``, every listing, keyed by itself."""
    if same_product:
        every = np.arange(len(products))
        return every, every, every
    keys, first, inverse = np.unique(products, return_index=True, return_inverse=True)
    return first, np.arange(len(keys)), inverse.reshape(-1)


class _Spill:
    """Vectors spilled to local files group by group, so a group can be read back alone."""

    def __init__(self, directory: str):
        self.directory = directory
        self.files: dict[str, list[str]] = defaultdict(list)

    def add(self, group: str, ids: np.ndarray, vectors: np.ndarray,
            products: np.ndarray) -> None:
        name = hashlib.sha256(group.encode("utf-8")).hexdigest()[:16]
        path = os.path.join(self.directory, f"{name}-{len(self.files[group]):06d}.npz")
        np.savez(path, ids=ids, vectors=vectors, products=products)
        self.files[group].append(path)

    def read(self, group: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parts = [np.load(path, allow_pickle=False) for path in self.files[group]]
        found = tuple(np.concatenate([part[name] for part in parts])
                      for name in ("ids", "vectors", "products"))
        for path in self.files.pop(group):
            os.remove(path)
        return found


def neighbours(paths: RunPaths, k: int = 100, level: int = 2, index: str = "auto",
               with_vectors: bool = False, seed: int = 0, same_product: bool = False) -> dict:
    """Find every embedded product's neighbours in its group; write them for publishing.
    Other listings of the same real product are not neighbours unless ``same_product``."""
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be 1..{MAX_K}, got {k}")
    if level < 0:
        raise ValueError(f"level must be 0 (global) or more, got {level}")
    index_type(1, index)  # an unknown type fails before any work
    shards = embedding_shards(paths.embeddings_dir)
    if not shards:
        raise FileNotFoundError(f"no embeddings under {paths.embeddings_dir}: run the "
                                "trainer's embed first")
    tokeniser = Tokeniser.from_dict(storage.read_json(paths.embeddings_dir + TOKENISER_FILE))
    started = time.monotonic()
    sizes: Counter = Counter()
    with tempfile.TemporaryDirectory(prefix="prodcat-similar-") as tmp:
        spill = _Spill(tmp)
        for number, shard in enumerate(shards):  # pass 1: spill each shard's vectors by group
            ids, vectors, predicted, products = read_shard(shard)
            groups = np.array([group_of(path, level) for path in predicted], dtype=object)
            for group in sorted(set(groups)):
                rows = groups == group
                spill.add(group, ids[rows], vectors[rows], products[rows])
                sizes[group] += int(rows.sum())
            log.info("read embeddings shard %d/%d", number + 1, len(shards))
        for stale in storage.glob(paths.similar_dir + "part-*") + storage.glob(
                paths.similar_published_dir + "*"):
            storage.remove(stale)
        version = next_prediction_version(paths, paths.similar_sets)
        kinds: Counter = Counter()
        recalls = {}
        with storage.ShardedJsonlWriter(paths.similar_dir, RECORDS_PER_SHARD) as out:
            for group in sorted(sizes):  # pass 2: one group at a time
                ids, vectors, products = spill.read(group)
                indexed, keys, query_keys = representatives(products, same_product)
                base = vectors[indexed]
                wanted = min(k, len(indexed) - 1)
                kind = index_type(len(indexed), index)
                kinds[kind] += 1
                if wanted > 0:
                    scores, found = search(build_index(base, kind, wanted, seed), base, vectors,
                                           wanted, IVFPQ_RERANK if kind == "ivfpq" else 1,
                                           keys, query_keys)
                    if kind != "flat":
                        recalls[group] = round(sampled_recall(base, vectors, found, wanted, keys,
                                                              query_keys, seed), 4)
                    rows = np.where(found >= 0, indexed[np.maximum(found, 0)], -1)
                else:
                    scores = rows = np.zeros((len(ids), 0), dtype=np.int64)
                # tokens only on the listings indexed: a token search finds products, as
                # the neighbour sets do, and each write of a product holding 128 tokens costs
                # the store a re-analysis of them (about twice a plain write on osmem)
                tokens = dict(zip(indexed.tolist(), tokeniser.tokens(base), strict=True))
                for row, product_id in enumerate(ids):
                    record = {"id": str(product_id), "run_id": paths.run_id, "version": version,
                              "similar_group": group, "similar_level": level,
                              "similar_products": [
                                  {"id": str(ids[r]), "score": round(float(s), 4)}
                                  for r, s in zip(rows[row], scores[row], strict=True) if r >= 0],
                              "image_tokens": tokens.get(row, "")}
                    if with_vectors:
                        record["image_embedding"] = [round(float(x), 5) for x in vectors[row]]
                    out.write(record)
                log.info("group %r: %d products, %s index", group, len(ids), kind)
    result = {"products": out.records, "shards": out.shards, "version": version, "k": k,
              "level": level, "same_product": same_product, "groups": len(sizes),
              "largest_group": max(sizes.values()),
              "products_without_prediction": sizes.get(NO_PREDICTION, 0),
              "index_types": dict(kinds), "seconds": round(time.monotonic() - started, 2),
              "similar_dir": paths.similar_dir}
    if recalls:
        result["sampled_recall_at_k"] = {"min": min(recalls.values()),
                                         "mean": round(float(np.mean(list(recalls.values()))), 4)}
    return result


def main(argv=None) -> None:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m similarity.neighbours", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--k", type=int, default=100, help=f"neighbours per product, 1..{MAX_K}"
                                                           " (default 100)")
    parser.add_argument("--level", type=int, default=2,
                        help="restrict to the predicted category at this level (0: global; "
                             "default 2)")
    parser.add_argument("--index", choices=INDEX_TYPES, default="auto",
                        help="the index per group (default auto: by the group's size)")
    parser.add_argument("--same-product", action="store_true",
                        help="let other listings of the same product be neighbours")
    parser.add_argument("--with-vectors", action="store_true",
                        help="publish each product's vector too, for a store's own knn queries")
    args = parser.parse_args(argv)
    paths = run_paths(parser, args.run_id)
    if not 1 <= args.k <= MAX_K or args.level < 0:
        parser.error(f"--k must be 1..{MAX_K} and --level 0 or more")
    finish_stage(paths, "similar", neighbours(paths, args.k, args.level, args.index,
                                              args.with_vectors, same_product=args.same_product))


if __name__ == "__main__":
    main()
