"""Training data, multi-objective schedules, and an epoch loop that resumes.

Schedules (``--schedule``):
- ``joint``: both objectives from the first batch;
- ``exclusive_only``: the rule-based loss is off (its head is still built);
- ``rule_then_exclusive``: ``pretrain_epochs`` on rule labels alone, then both;
- ``interleaved``: batches alternate between the two objectives.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile

import keras
import tensorflow as tf

from shared_config import storage
from shared_config.paths import CATALOG, OBJECTIVES, RunPaths
from trainer import data
from trainer.hparams import HParams

log = logging.getLogger("prodcat.trainer")
WEIGHTS_FILE, PROGRESS_FILE = "last.weights.h5", "progress.json"


def keep_objectives(dataset, keep: tuple[str, ...]):
    """Zero the loss weights of the objectives not in ``keep``."""
    def mask(inputs, targets, weights):
        return inputs, targets, {o: w if o in keep else tf.zeros_like(w) for o, w in weights.items()}
    return dataset.map(mask)


def training_rows(paths: RunPaths, hparams: HParams, vocabs, counts: dict):
    """``(unbatched rows, rows per epoch)``.

    Supervised models read the labelled rows, each objective an equal share, so
    the few human labels are not drowned by the many rule-based ones. The
    SSL-GAN reads every training product (the unlabelled ones feed the GAN) and
    draws ``labelled_share`` of the rows from those with an exclusive label.
    """
    def rows(objective: str):
        files = data.tfrecord_files(paths, objective, "train")
        return data.dataset(files, vocabs, hparams.batch_size, hparams.objectives, shuffle=True,
                            repeat=True, seed=hparams.seed).unbatch()

    if hparams.model_type == "ssl_gan":
        pool = counts.get(f"{CATALOG}_train", 0)
        if pool == 0:
            raise RuntimeError(f"no training products at all: {counts}")
        if counts.get("exclusive_train", 0) == 0 or hparams.labelled_share == 0:
            return rows(CATALOG), pool
        mixed = tf.data.Dataset.sample_from_datasets(
            [rows("exclusive"), rows(CATALOG)], [hparams.labelled_share, 1 - hparams.labelled_share],
            seed=hparams.seed, rerandomize_each_iteration=True)
        return mixed, pool
    present = [o for o in hparams.objectives if counts.get(f"{o}_train", 0) > 0]
    if not present:
        raise RuntimeError(f"no training examples for {list(hparams.objectives)}: {counts}")
    mixed = tf.data.Dataset.sample_from_datasets([rows(o) for o in present], seed=hparams.seed,
                                                 rerandomize_each_iteration=True)
    return mixed, sum(counts[f"{o}_train"] for o in present)


def batches_for_epoch(rows, hparams: HParams):
    """A function: epoch number -> the batched dataset the schedule wants then."""
    batched = rows.batch(hparams.batch_size)
    joint = batched.prefetch(tf.data.AUTOTUNE)
    if hparams.schedule == "joint":
        return lambda epoch: joint
    if hparams.schedule == "exclusive_only":
        only = keep_objectives(batched, ("exclusive",)).prefetch(tf.data.AUTOTUNE)
        return lambda epoch: only
    if hparams.schedule == "rule_then_exclusive":
        rules_only = keep_objectives(batched, ("rule_based",)).prefetch(tf.data.AUTOTUNE)
        return lambda epoch: rules_only if epoch < hparams.pretrain_epochs else joint
    alternating = tf.data.Dataset.choose_from_datasets(
        [keep_objectives(batched, (o,)) for o in OBJECTIVES],
        tf.data.Dataset.range(len(OBJECTIVES)).repeat()).prefetch(tf.data.AUTOTUNE)
    return lambda epoch: alternating


def fit(model, hparams: HParams, dataset_for_epoch, rows_per_epoch: int, model_dir: str) -> dict:
    """Train epoch by epoch; after each, keep the weights and the epoch reached under
    ``model_dir/training/``, so a restarted train goes on from there."""
    steps = max(1, math.ceil(rows_per_epoch / hparams.batch_size))
    training_dir = model_dir + "training/"
    done = _restore(model, training_dir, dataset_for_epoch(0))
    board = keras.callbacks.TensorBoard(log_dir=model_dir + "tensorboard")
    history: dict[str, list[float]] = {}
    for epoch in range(done, hparams.epochs):
        result = model.fit(dataset_for_epoch(epoch), epochs=epoch + 1, initial_epoch=epoch,
                           steps_per_epoch=steps, callbacks=[board], verbose=2)
        for name, values in result.history.items():
            history.setdefault(name, []).extend(float(v) for v in values)
        _save_weights(model, training_dir + WEIGHTS_FILE)
        storage.write_json(training_dir + PROGRESS_FILE, {"epochs_done": epoch + 1})
    return {"resumed_at_epoch": done, "history": history}


def _restore(model, training_dir: str, sample) -> int:
    if not storage.exists(training_dir + PROGRESS_FILE):
        return 0
    done = int(storage.read_json(training_dir + PROGRESS_FILE)["epochs_done"])
    inputs = next(iter(sample))[0]
    model(inputs)  # build the variables before loading into them
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, WEIGHTS_FILE)
        storage.download(training_dir + WEIGHTS_FILE, local)
        model.load_weights(local)
    log.info("resuming after epoch %d from %s", done, training_dir)
    return done


def _save_weights(model, target: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, WEIGHTS_FILE)
        model.save_weights(local)
        storage.upload(local, target)
