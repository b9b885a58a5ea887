"""The peer every run is compared with: a tuned, class-balanced logistic regression.

What a practitioner would try first on the same labelled rows: scikit-learn's
``LogisticRegression(class_weight="balanced")`` with its ``C`` searched. ``tune``
picks ``C`` with a scoring function (the benchmark scores on its validation
split); ``fit_peer`` picks it by grouped cross-validation on the labelled
training rows (the run's validation split stays untouched for the comparison).

``python -m trainer.peer --run-id R`` (the DAG's ``train_and_evaluate_baseline``
task runs it): reads the run's ``exclusive_train`` TFRecords, the very rows the
model learns its exclusive head from, as sparse features (TF-IDF weights,
one-hot categoricals, scaled numbers, the image's pixels), fits the peer, and
reports its validation metrics with the trainer's own ``metrics``.
"""
from __future__ import annotations

import hashlib
import logging
import time

import numpy as np

from trainer.metrics import macro_f1

log = logging.getLogger("prodcat.peer")
C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
# every run folds 3 times per value: a decade apart keeps the task to a minute or two
CV_GRID = (0.1, 1.0, 10.0, 100.0)


def balanced_logreg(c: float, seed: int = 0):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)


def class_probabilities(model, x, classes: int) -> np.ndarray:
    """A fitted classifier's probabilities over every one of ``classes`` (a class its
    training rows lacked gets 0)."""
    full = np.zeros((x.shape[0], classes))
    full[:, model.classes_] = model.predict_proba(x)
    return full


def tune(fit_and_score, grid=C_GRID):
    """``(best score, best C)`` over ``grid``; ``fit_and_score(C)`` returns a score."""
    scored = [(fit_and_score(c), c) for c in grid]
    return max(scored, key=lambda pair: (pair[0], -pair[1]))  # ties: the stronger regularisation


def cross_validated_c(x, y, groups, folds: int = 3, seed: int = 0, grid=CV_GRID,
                      n_jobs: int = -1) -> float:
    """``C`` with the best mean macro-F1 over grouped folds (a product's listings stay in
    one fold); the middle of the grid when there are too few rows or groups to fold. The
    grid's fits run ``n_jobs`` at a time (-1: one per core; the same ``C`` as one by one)."""
    from joblib import Parallel, delayed
    from sklearn.model_selection import GroupKFold

    if len(np.unique(groups)) < folds or len(np.unique(y)) < 2:
        return 1.0
    splits = [(train, held) for train, held in GroupKFold(n_splits=folds).split(x, y, groups)
              if len(np.unique(y[train])) >= 2]

    def fold_score(c, train, held):
        model = balanced_logreg(c, seed).fit(x[train], y[train])
        return macro_f1(y[held], model.predict(x[held]))

    scores = Parallel(n_jobs=n_jobs)(delayed(fold_score)(c, train, held)
                                     for c in grid for train, held in splits)
    per_c = {c: float(np.mean(scores[i * len(splits):(i + 1) * len(splits)])) if splits else 0.0
             for i, c in enumerate(grid)}
    return tune(per_c.__getitem__, grid)[1]


def rows_digest(ids) -> str:
    """A digest of a set of product ids: two stages trained on the same rows agree on it."""
    digest = hashlib.sha1()
    for product_id in sorted(ids):
        digest.update(product_id.encode("utf-8") + b"\n")
    return digest.hexdigest()


def _features(paths, vocabs, objective: str, split: str):
    """``(sparse x, labels, ids, groups)`` of one objective/split, read batch by batch."""
    from scipy import sparse

    from trainer import data

    files = data.tfrecord_files(paths, objective, split)
    blocks, labels, ids, groups = [], [], [], []
    for batch in data.raw_batches(files, vocabs, 512):
        parts = []
        for feature in vocabs.config.features:
            if feature.kind == "text":
                width = vocabs.input_size(feature)
                sp = batch[f"{feature.name}_ids"]
                weights = batch[f"{feature.name}_weights"].values.numpy()
                rows_, cols = sp.indices.numpy()[:, 0], sp.values.numpy()
                parts.append(sparse.csr_matrix((weights, (rows_, cols)),
                                               shape=(int(sp.dense_shape[0]), width)))
            elif feature.kind == "categorical":
                width = vocabs.input_size(feature)
                values = batch[feature.name].numpy()
                parts.append(sparse.csr_matrix((np.ones(len(values)), (np.arange(len(values)),
                                                                       values)),
                                               shape=(len(values), width)))
            elif feature.kind == "image":
                pixels = data.decode_images(batch[feature.name], feature.image_size).numpy()
                parts.append(sparse.csr_matrix(pixels.reshape(len(pixels), -1)))
            else:
                parts.append(sparse.csr_matrix(batch[feature.name].numpy().reshape(-1, 1)))
        blocks.append(sparse.hstack(parts).tocsr())
        labels.append(batch["exclusive_label"].numpy())
        ids += [i.decode("utf-8") for i in batch["id"].numpy()]
        groups += [g.decode("utf-8") for g in batch["group"].numpy()]
    return (sparse.vstack(blocks).tocsr().astype("float32"), np.concatenate(labels),
            np.array(ids), np.array(groups))


def fit_peer(paths, seed: int = 0) -> dict:
    """Fit the tuned peer on the run's exclusive training rows; its validation metrics."""
    from trainer import metrics, task

    started = time.monotonic()
    counts = task.example_counts(paths)
    if counts.get("exclusive_train", 0) == 0:
        log.warning("no labelled training products: no peer")
        return {"skipped": "no labelled training products", "trained_on": 0}
    vocabs = task.vocabularies(paths)
    names = vocabs.labels("exclusive")
    x, y, ids, groups = _features(paths, vocabs, "exclusive", "train")
    if len(np.unique(y)) < 2:  # nothing to compare with; the run goes on without it
        log.warning("the labelled training products are all of one class: no peer")
        return {"skipped": f"the {len(y)} labelled training products are all of one class",
                "trained_on": len(y), "trained_on_digest": rows_digest(ids)}
    c = cross_validated_c(x, y, groups, seed=seed)
    model = balanced_logreg(c, seed).fit(x, y)
    log.info("peer: C=%s chosen by grouped 3-fold cross-validation on %d rows", c, len(y))
    result = {"model_type": "logreg_balanced", "C": c, "trained_on": len(y),
              "trained_on_digest": rows_digest(ids), "split": "valid", "objectives": {}}
    if counts.get("exclusive_valid", 0):
        x_valid, y_valid, _, _ = _features(paths, vocabs, "exclusive", "valid")
        probabilities = class_probabilities(model, x_valid, len(names))
        result["objectives"]["exclusive"] = metrics.exclusive_metrics(y_valid, probabilities,
                                                                      names)
    result["seconds"] = round(time.monotonic() - started, 2)
    return result


def main(argv=None) -> None:
    import argparse

    from shared_config.cli import finish_stage, run_paths, setup_logging

    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m trainer.peer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = run_paths(parser, args.run_id)
    finish_stage(paths, "peer_evaluate_valid", fit_peer(paths, args.seed))


if __name__ == "__main__":
    main()
