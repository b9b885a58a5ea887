"""Score a trained run's unlabelled products and choose which to label next.

    python -m active_learning.select score  --run-id R [--strategy density] [--batch-size 100]
                                            [--diverse] [--diversity-weight 0.75]
                                            [--committee-dropout 3]
    python -m active_learning.select choose --run-id R   # against the store: skip the queued
    python -m active_learning.select queue  --run-id R   # write label requests into the store
    python -m active_learning.select stats  --run-id R   # selection figures to the runs index

``score`` streams the run's catalogue (``catalog_{split}`` TFRecords) through the
trained model chunk by chunk and keeps only the best candidates (a bounded heap):
memory is a chunk plus the candidates, however large the pool — except for
``density``, which holds per pool product its embedding (in a nearest-neighbour
index), id, group, margin and predicted class, and scores every product once the
whole pool is indexed: one pass, memory linear in the pool. **Only the training split is chosen by strategy**: valid and test
products are drawn at random (``--eval-share`` of the batch size, in proportion to
the splits' pools), so the figures measured on them stay unbiased estimates.

Strategies (``active_learning/strategies.py``): ``random``, ``least_confidence``,
``margin``, ``entropy``, ``committee`` (KL to the consensus of the model, its
MC-dropout passes and the run's supervised baseline when there is one), ``density``
(margin x the mean cosine similarity to the 10 nearest pool products in the
model's feature space, with faiss); ``--diverse`` picks the batch among 10x as many
candidates by ranked batch mode (``--diversity-weight``: spread against score), one
listing per product group.

``choose`` drops the candidates the store says are labelled or already queued and
takes the batch; ``queue`` writes a ``label_request`` (run id, strategy, score,
rank, split, time) on each with optimistic concurrency, never touching a label;
``stats`` records the selection (how many queued, the scores' quantiles, the
batch's predicted class mix, the stopping signal) in ``stats/selection.json`` and
the runs index.
"""
from __future__ import annotations

import argparse
import functools
import gzip
import heapq
import json
import logging
import os
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np

from active_learning import strategies
from shared_config import storage
from shared_config.cli import emit_result, finish_stage, run_paths, setup_logging
from shared_config.paths import CATALOG, SPLITS, RunPaths
from shared_config.selection import DEFAULT_STRATEGY

log = logging.getLogger("prodcat.selection")
CHUNK = 512
NEIGHBOURS = 10
DENSITY_BLOCK = 8192
CANDIDATES_PER_PICK = 10  # diverse: the batch is chosen among 10x its size
SPARE_CANDIDATES = 3  # plain: 3x, as some may turn out queued already


def _stream(paths: RunPaths, split: str, vocabs):
    """``(ids, groups, unlabelled mask, model inputs)`` per chunk of one split's catalogue."""
    from trainer import data

    if not storage.glob(paths.tfrecord_files(CATALOG, split)):
        return
    for batch in data.raw_batches(data.tfrecord_files(paths, CATALOG, split), vocabs, CHUNK):
        ids = [v.decode("utf-8") for v in batch["id"].numpy()]
        groups = [v.decode("utf-8") for v in batch["group"].numpy()]
        unlabelled = batch["exclusive_label"].numpy() < 0
        yield ids, groups, unlabelled, data.to_model_inputs(batch, vocabs)


def _forward(model):
    """inputs -> ``(class probabilities, L2-normalised features)``, as numpy, in one traced
    graph (a chunk's eager call costs ~15x more): the features are the SSL-GAN's
    discriminator features (the space its feature matching works in), else the class
    probabilities. The rule-based head, which selection does not read, is not computed."""
    import tensorflow as tf

    try:
        encoder, discriminator = model.get_layer("encoder"), model.get_layer("discriminator")
    except ValueError:
        encoder = discriminator = None

    @tf.function(reduce_retracing=True)
    def forward(inputs):
        probabilities = model(inputs, training=False)["exclusive"]
        vectors = probabilities if encoder is None else discriminator(
            encoder(inputs, training=False), training=False)["features"]
        return probabilities, tf.cast(vectors, tf.float32)

    def run(inputs):
        probabilities, vectors = (np.asarray(value) for value in forward(inputs))
        return probabilities, vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12)

    return run


class _Best:
    """The ``size`` highest-scoring items seen, in a heap (memory ~ size). An item is offered
    as a function that makes it, called only for one that gets in."""

    def __init__(self, size: int):
        self.size, self.heap, self.seen = size, [], 0

    def offer(self, score: float, key: str, make_item) -> None:
        self.seen += 1
        if len(self.heap) < self.size:
            heapq.heappush(self.heap, (score, key, make_item()))
        elif (score, key) > self.heap[0][:2]:
            heapq.heapreplace(self.heap, (score, key, make_item()))

    def best_first(self) -> list[dict]:
        return [item for _, _, item in sorted(self.heap, key=lambda e: e[:2], reverse=True)]


def _density_index(pool: np.ndarray):
    """A faiss inner-product index over the unlabelled training pool's embeddings."""
    import faiss

    pool = np.ascontiguousarray(pool, dtype="float32")
    if len(pool) > 100_000:  # approximate: an inverted file of ~4 sqrt(n) lists
        lists = int(4 * np.sqrt(len(pool)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(pool.shape[1]), pool.shape[1], lists,
                                   faiss.METRIC_INNER_PRODUCT)
        index.train(pool[np.random.default_rng(0).choice(len(pool), 50 * lists)])
        index.nprobe = 8
    else:
        index = faiss.IndexFlatIP(pool.shape[1])
    index.add(pool)
    log.info("density: %d pool products indexed", len(pool))
    return index


def _density(index, vectors: np.ndarray) -> np.ndarray:
    """Each vector's mean similarity to its ``NEIGHBOURS`` nearest others, searched in
    blocks of ``DENSITY_BLOCK`` (faiss searches a block of 8,192 five times faster than 16
    of 512)."""
    density = np.empty(len(vectors), dtype="float32")
    for start in range(0, len(vectors), DENSITY_BLOCK):
        block = np.ascontiguousarray(vectors[start:start + DENSITY_BLOCK], dtype="float32")
        similarities, _ = index.search(block, NEIGHBOURS + 1)
        # the product itself comes first
        density[start:start + len(block)] = similarities[:, 1:].clip(min=0).mean(axis=1)
    return density


def score(paths: RunPaths, strategy: str, batch_size: int, diverse: bool, eval_share: float,
          committee_dropout: int = 3, hparams_id: str | None = None,
          diversity_weight: float = strategies.DIVERSITY_WEIGHT) -> dict:
    """Stream the pool; keep the best training candidates and random valid/test ones."""
    from trainer import task

    if strategy not in strategies.STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: use one of {strategies.STRATEGIES}")
    hparams_id = hparams_id or storage.read_json(paths.stats_file("train"))["hparams_id"]
    model, _ = task.load_trained(paths, hparams_id)
    vocabs = task.vocabularies(paths)
    members = [model]
    if strategy == "committee" and storage.exists(paths.stats_file("baseline_train")):
        baseline = storage.read_json(paths.stats_file("baseline_train"))["hparams_id"]
        members.append(task.load_trained(paths, baseline, "baseline")[0])
    forward = _forward(model)
    seed = zlib.crc32(paths.run_id.encode())
    spare = CANDIDATES_PER_PICK if diverse else SPARE_CANDIDATES
    train = _Best(batch_size * spare)
    evaluation = _Best(max(1, round(batch_size * eval_share)) * SPARE_CANDIDATES)
    pool = {"uncertainty_sum": 0.0, "unlabelled": dict.fromkeys(SPLITS, 0)}
    held, held_vectors = [], []  # density: each chunk's ids, groups, margins, predictions

    def offer(ids, groups, values, predicted, vectors):
        for i, product_id in enumerate(ids):
            train.offer(float(values[i]), product_id, lambda i=i, product_id=product_id: {
                "id": product_id, "group": groups[i], "split": "train",
                "score": float(values[i]), "predicted": int(predicted[i]),
                "embedding": [round(float(v), 5) for v in vectors[i]]})

    for split in SPLITS:
        for ids, groups, unlabelled, inputs in _stream(paths, split, vocabs):
            keep = np.flatnonzero(unlabelled)
            pool["unlabelled"][split] += len(keep)
            if not len(keep):
                continue
            if split != "train":  # valid and test: at random, never by strategy
                for row, value in zip(keep, strategies.random_scores(
                        [ids[r] for r in keep], seed)):
                    evaluation.offer(float(value), ids[row], functools.partial(
                        dict, id=ids[row], group=groups[row], split=split, score=float(value)))
                continue
            probabilities, vectors = (values[keep] for values in forward(inputs))
            margins = strategies.margin(probabilities)
            pool["uncertainty_sum"] += float(margins.sum())
            chunk_ids, chunk_groups = [ids[r] for r in keep], [groups[r] for r in keep]
            predicted = probabilities.argmax(axis=1)
            if strategy == "density":  # scored once the whole pool is in the index
                held.append((chunk_ids, chunk_groups, margins, predicted))
                held_vectors.append(vectors)
                continue
            if strategy == "random":
                values = strategies.random_scores(chunk_ids, seed)
            elif strategy == "committee":
                votes = [probabilities] + [  # the model's own answer is computed already
                    np.asarray(m(inputs, training=False)["exclusive"])[keep] for m in members[1:]]
                votes += [np.asarray(model(inputs, training=True)["exclusive"])[keep]
                          for _ in range(committee_dropout)]
                values = strategies.committee(votes)
            else:
                values = getattr(strategies, strategy)(probabilities)
            offer(chunk_ids, chunk_groups, values, predicted, vectors)
        log.info("scored the %s pool: %d unlabelled products", split, pool["unlabelled"][split])
    if held:  # density: one pass over the pool, then each product against the whole pool
        pool_vectors = np.concatenate(held_vectors)
        held_vectors.clear()
        density, start = _density(_density_index(pool_vectors), pool_vectors), 0
        for chunk_ids, chunk_groups, margins, predicted in held:
            end = start + len(chunk_ids)
            offer(chunk_ids, chunk_groups, strategies.information_density(
                margins, density[start:end]), predicted, pool_vectors[start:end])
            start = end
    names = vocabs.labels("exclusive")
    candidates = train.best_first() + evaluation.best_first()
    with storage.open_file(paths.selection_dir + "candidates.jsonl.gz", "wb") as raw, \
            gzip.open(raw, "wt", encoding="ascii") as out:
        for candidate in candidates:
            if "predicted" in candidate:
                candidate["predicted"] = names[candidate["predicted"]]
            out.write(storage.to_line(candidate) + "\n")
    unlabelled_train = pool["unlabelled"]["train"]
    return {"strategy": strategy, "diverse": diverse,
            "diversity_weight": diversity_weight if diverse else None, "batch_size": batch_size,
            "eval_share": eval_share, "hparams_id": hparams_id,
            "committee": len(members) + committee_dropout if strategy == "committee" else None,
            "candidates": {"train": len(train.heap), "evaluation": len(evaluation.heap)},
            "pool_unlabelled": pool["unlabelled"],
            # small-text's "overall uncertainty" stopping signal: the pool's mean margin score
            "pool_mean_uncertainty": round(pool["uncertainty_sum"] / unlabelled_train, 4)
            if unlabelled_train else None}


def _read_candidates(paths: RunPaths) -> list[dict]:
    with storage.open_file(paths.selection_dir + "candidates.jsonl.gz", "rb") as raw, \
            gzip.open(raw, "rt", encoding="ascii") as lines:
        return [json.loads(line) for line in lines]


def choose(paths: RunPaths, store) -> dict:
    """The batch: the best candidates the store has neither labelled nor queued."""
    scored = storage.read_json(paths.stats_file("selection_score"))
    candidates = _read_candidates(paths)
    state = store.sources([c["id"] for c in candidates])
    open_ = [c for c in candidates if c["id"] in state and not state[c["id"]].get(
        "exclusive_label") and not state[c["id"]].get("label_request")]
    train = [c for c in open_ if c["split"] == "train"]
    size = scored["batch_size"]
    if scored["diverse"] and train:
        embeddings = np.array([c["embedding"] for c in train], dtype="float32")
        picked = [train[i] for i in strategies.diverse_batch(
            np.array([c["score"] for c in train]), embeddings, [c["group"] for c in train], size,
            weight=strategies.DIVERSITY_WEIGHT if scored.get("diversity_weight") is None
            else scored["diversity_weight"])]
    else:
        picked = train[:size]
    evaluation = [c for c in open_ if c["split"] != "train"][
        :max(1, round(size * scored["eval_share"])) if scored["eval_share"] else 0]
    batch = [{k: v for k, v in c.items() if k != "embedding"} | {"rank": rank}
             for rank, c in enumerate(picked + evaluation, 1)]
    storage.write_json(paths.selection_dir + "batch.json", batch)
    return {"chosen": len(batch), "train": len(picked), "evaluation": len(evaluation),
            "skipped_labelled_or_queued": len(candidates) - len(open_),
            "distinct_groups": len({c["group"] for c in picked})}


def main(argv=None) -> None:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m active_learning.select", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("score", "choose", "queue", "stats"))
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--strategy", default=DEFAULT_STRATEGY, choices=strategies.STRATEGIES)
    parser.add_argument("--batch-size", type=int, default=100,
                        help="training products to queue (default 100)")
    parser.add_argument("--diverse", action="store_true",
                        help="pick a diverse batch (one listing per product group)")
    parser.add_argument("--diversity-weight", type=float, default=strategies.DIVERSITY_WEIGHT,
                        help="how much a diverse batch values spread over score, in [0, 1] "
                             f"(default {strategies.DIVERSITY_WEIGHT})")
    parser.add_argument("--eval-share", type=float, default=0.2,
                        help="valid/test products drawn at random, as a share of the batch "
                             "size (default 0.2)")
    parser.add_argument("--committee-dropout", type=int, default=3,
                        help="MC-dropout members of the committee (default 3)")
    parser.add_argument("--hparams-id", help="the model to score with (default: the run's)")
    args = parser.parse_args(argv)
    paths = run_paths(parser, args.run_id)
    if (args.batch_size < 1 or not 0 <= args.eval_share <= 1 or args.committee_dropout < 0
            or not 0 <= args.diversity_weight <= 1):
        parser.error("--batch-size must be positive, --eval-share and --diversity-weight in "
                     "[0, 1], --committee-dropout >= 0")
    try:
        _run(args, paths)
    except FileNotFoundError as err:  # a run not trained, or a command before its turn
        parser.exit(1, f"error: run {args.run_id}: {err} (train the run, then run the "
                       "commands in order: score, choose, queue, stats)\n")


def _run(args, paths: RunPaths) -> None:
    from store.client import ProductStore

    if args.command == "score":
        finish_stage(paths, "selection_score", score(
            paths, args.strategy, args.batch_size, args.diverse, args.eval_share,
            args.committee_dropout, args.hparams_id, args.diversity_weight))
    elif args.command == "choose":
        finish_stage(paths, "selection_choose", choose(paths, ProductStore.from_settings()))
    elif args.command == "queue":
        from active_learning.queue import queue_batch

        finish_stage(paths, "selection_queue", queue_batch(paths, ProductStore.from_settings()))
    else:
        from active_learning.queue import record_selection
        from shared_config.settings import Settings
        from store.run_stats import previous_exclusive_macro_f1

        previous = previous_exclusive_macro_f1(Settings.from_env(), paths.run_id)
        emit_result(record_selection(paths, previous))


if __name__ == "__main__":
    main()
