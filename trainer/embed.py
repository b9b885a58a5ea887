"""The trainer's ``embed`` command: train the image tower on the run's labels, then
write one vector per product.

    python -m trainer.controller embed --run-id R [--embed-epochs 20] [--embed-dim 64]
                                       [--embed-labels auto|exclusive|rule_based]

The tower (``trainer/image_embedding.py``) learns from the run's training products
that have an image and one label: the exclusive objective's human labels, or the
products with exactly one rule label (``auto``: the human labels when at least
``MIN_EXACT_IMAGES`` labelled images of two classes or more are there — they are exact,
and the rules, written on the text, often single out only a few broad classes — else
whichever gives more images). The same
objective's validation products decide early stopping. Then every product of the
catalogue is embedded, in the order predict read them, and written with its
predicted category path (from the run's predictions, checked id by id) to
``embeddings/`` shards of ``EMBEDDINGS_PER_SHARD`` products (``similarity/embeddings.py``): memory
stays flat however large the catalogue. Products without a usable image get no
vector (counted as ``no_image``). Beside the shards: the tower, the tokeniser of
``similarity/tokens.py`` fitted on the first vectors, and ``embed.json``.
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator

import numpy as np

from beam_pipelines.raw_schema import GROUP_KEY
from shared_config import storage
from shared_config.features import FeatureConfig
from shared_config.paths import RunPaths
from similarity import embeddings
from similarity.embeddings import SUMMARY_FILE, TOKENISER_FILE, TOWER_FILE
from similarity.tokens import Tokeniser
from trainer import data, image_embedding

log = logging.getLogger("prodcat.trainer")
EMBEDDINGS_PER_SHARD = 50_000
TOKENISER_SAMPLE = 20_000
LABEL_SOURCES = ("auto", "exclusive", "rule_based")
MIN_EXACT_IMAGES = 100


def image_feature(config: FeatureConfig):
    for feature in config.features:
        if feature.kind == "image":
            return feature
    raise ValueError("the feature config has no image feature: there is nothing to embed")


def _pixels(encoded: np.ndarray, size: int) -> np.ndarray:
    """Encoded images -> uint8 ``[n, size, size]`` greyscale."""
    import tensorflow as tf

    return np.asarray(tf.round(data.decode_images(tf.constant(encoded), size)[..., 0] * 255),
                      dtype=np.uint8)


def _has_image(encoded: np.ndarray) -> np.ndarray:
    """Which of a batch's image fields hold bytes (an empty one: no usable image)."""
    return np.char.str_len(encoded.astype(bytes)) > 0


def labelled_images(paths: RunPaths, vocabs, objective: str, split: str,
                    limit: int) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 images, class ids)`` of the split's products with an image and one label
    of ``objective`` (a rule-labelled product counts only with exactly one rule label)."""
    feature = image_feature(vocabs.config)
    none = np.zeros((0, feature.image_size, feature.image_size), np.uint8), np.zeros(0, int)
    images, labels = [], []
    try:
        files = data.tfrecord_files(paths, objective, split)
    except FileNotFoundError:
        return none
    kept = 0
    for batch in data.raw_batches(files, vocabs, 512):
        encoded = batch[feature.name].numpy()
        if objective == "exclusive":
            label = batch["exclusive_label"].numpy().reshape(-1)
        else:
            sparse = batch["rule_based_labels"]
            rows = sparse.indices.numpy()[:, 0]
            counts = np.bincount(rows, minlength=len(encoded))
            label = np.full(len(encoded), -1)
            single = counts[rows] == 1
            label[rows[single]] = sparse.values.numpy()[single]
        keep = (label >= 0) & _has_image(encoded)
        if keep.any():
            images.append(_pixels(encoded[keep], feature.image_size))
            labels.append(label[keep])
            kept += int(keep.sum())
        if kept >= limit:
            break
    if not images:
        return none
    return np.concatenate(images)[:limit], np.concatenate(labels)[:limit].astype(np.int64)


def _predicted_paths(paths: RunPaths) -> Iterator[tuple[str, list[str]]] | None:
    """``(id, predicted category path)`` in the order predict wrote them; None without."""
    files = storage.glob(paths.predictions_dir + "part-*.jsonl.gz")
    if not files:
        return None

    def stream():
        for path in files:
            with storage.open_file(path, "rb") as raw, gzip.open(raw, "rt") as lines:
                for line in lines:
                    record = json.loads(line)
                    yield record["id"], record.get("exclusive", {}).get("path", [])
    return stream()


def choose_labels(paths: RunPaths, vocabs, wanted: str, limit: int):
    """The objective the tower learns from, with its training and validation images."""
    if wanted not in LABEL_SOURCES:
        raise ValueError(f"unknown label source {wanted!r}; use one of {LABEL_SOURCES}")
    candidates = ("exclusive", "rule_based") if wanted == "auto" else (wanted,)
    found = {o: labelled_images(paths, vocabs, o, "train", limit) for o in candidates}
    exact = found.get("exclusive", (None, np.zeros(0)))[1]
    if len(exact) >= MIN_EXACT_IMAGES and len(np.unique(exact)) >= 2:
        objective = "exclusive"
    else:
        objective = max(candidates, key=lambda o: len(found[o][1]))
    images, labels = found[objective]
    if len(np.unique(labels)) < 2:
        raise RuntimeError(f"the tower needs training images of at least two {objective} "
                           f"classes; the run has {len(labels)} labelled images")
    return objective, images, labels, labelled_images(paths, vocabs, objective, "valid", limit)


def embed(paths: RunPaths, vocabs, epochs: int = 20, dim: int = 64, labels: str = "auto",
          flip: bool = True, seed: int = 0, max_train: int = 200_000) -> dict:
    started = time.monotonic()
    feature = image_feature(vocabs.config)
    objective, images, classes, valid = choose_labels(paths, vocabs, labels, max_train)
    log.info("training the image tower on %d %s-labelled images (%d classes), %d for "
             "validation", len(classes), objective, len(np.unique(classes)), len(valid[1]))
    tower, valid_accuracy = image_embedding.train_supervised(
        images, classes, valid if len(valid[1]) else None, epochs=epochs, dim=dim, seed=seed,
        verbose=0)
    trained_s = time.monotonic() - started
    for stale in embeddings.shards(paths.embeddings_dir):
        storage.remove(stale)
    predicted = _predicted_paths(paths)
    if predicted is None:
        log.warning("no predictions in the run: neighbours can only be searched globally")
    counts = {"embedded": 0, "no_image": 0, "shards": 0}
    ids, vectors, categories, groups, sample = [], [], [], [], []
    for batch in data.raw_batches(data.catalog_files(paths), vocabs, 512):
        batch_ids = [i.decode("utf-8") for i in batch["id"].numpy()]
        batch_groups = [g.decode("utf-8") for g in batch[GROUP_KEY].numpy()]
        encoded = batch[feature.name].numpy()
        has_image = _has_image(encoded)
        batch_paths = [[] for _ in batch_ids]
        if predicted is not None:
            for row, product_id in enumerate(batch_ids):
                predicted_id, batch_paths[row] = next(predicted, (None, []))
                if predicted_id != product_id:
                    raise RuntimeError(f"the run's predictions do not follow its TFRecords "
                                       f"({predicted_id!r} where {product_id!r} was expected): "
                                       "run predict again, then embed")
        counts["no_image"] += int((~has_image).sum())
        if has_image.any():
            embedded = image_embedding.embed(tower, _pixels(encoded[has_image], feature.image_size),
                                             flip=flip)
            for row, vector in zip(np.flatnonzero(has_image), embedded, strict=True):
                ids.append(batch_ids[row])
                vectors.append(vector)
                categories.append(batch_paths[row])
                groups.append(batch_groups[row])
                if len(sample) < TOKENISER_SAMPLE:
                    sample.append(vector)
        while len(ids) >= EMBEDDINGS_PER_SHARD:
            embeddings.write_shard(paths.embeddings_dir, counts["shards"], ids[:EMBEDDINGS_PER_SHARD],
                                   vectors[:EMBEDDINGS_PER_SHARD], categories[:EMBEDDINGS_PER_SHARD],
                                   groups[:EMBEDDINGS_PER_SHARD])
            counts["shards"] += 1
            counts["embedded"] += EMBEDDINGS_PER_SHARD
            del ids[:EMBEDDINGS_PER_SHARD], vectors[:EMBEDDINGS_PER_SHARD]
            del categories[:EMBEDDINGS_PER_SHARD], groups[:EMBEDDINGS_PER_SHARD]
            log.info("embedded %d products", counts["embedded"])
    if ids:
        embeddings.write_shard(paths.embeddings_dir, counts["shards"], ids, vectors, categories,
                               groups)
        counts["shards"] += 1
        counts["embedded"] += len(ids)
    if counts["embedded"] < 2:
        raise RuntimeError(f"only {counts['embedded']} products have an image: nothing to compare")
    storage.write_json(paths.embeddings_dir + TOKENISER_FILE,
                       Tokeniser.fit(np.stack(sample)).to_dict())
    with tempfile.TemporaryDirectory() as tmp:
        tower.save(os.path.join(tmp, TOWER_FILE))
        storage.upload(os.path.join(tmp, TOWER_FILE), paths.embeddings_dir + TOWER_FILE)
    result = {**counts, "labels": objective, "training_images": len(classes),
              "validation_images": len(valid[1]), "classes": len(np.unique(classes)),
              "validation_accuracy": round(max(valid_accuracy), 4) if valid_accuracy else None,
              "epochs_run": len(valid_accuracy) or epochs, "dim": dim, "flip": flip,
              "with_predicted_paths": predicted is not None,
              "train_seconds": round(trained_s, 1),
              "seconds": round(time.monotonic() - started, 1),
              "embeddings_dir": paths.embeddings_dir}
    storage.write_json(paths.embeddings_dir + SUMMARY_FILE, result)
    return result
