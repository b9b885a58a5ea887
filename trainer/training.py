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
import time

import keras
import tensorflow as tf

from shared_config import storage
from shared_config.cli import Progress
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


def rows_of(paths: RunPaths, objective: str, hparams: HParams):
    """The training examples of one objective (or of the whole catalogue), serialized,
    shuffled, repeated: nothing is parsed until a batch is made."""
    files = data.tfrecord_files(paths, objective, "train")
    return data.records(files, shuffle=True, repeat=True, seed=hparams.seed)


def shares_of_batch(batch_size: int, shares: list[float]) -> list[int]:
    """Rows per source in a batch of ``batch_size``: in proportion to ``shares``, the
    rounding left to the largest share, and every source with a share > 0 at least one
    row where the batch has room."""
    total = sum(shares)
    sizes = [max(1, round(batch_size * share / total)) if share > 0 else 0 for share in shares]
    sizes[sizes.index(max(sizes))] += batch_size - sum(sizes)
    return sizes


def mixed_batches(sources: list, shares: list[float], batch_size: int):
    """Batches of serialized examples, each drawing ``shares_of_batch`` rows from every
    source (batches are mixed as they are made; a per-row sampler costs more than the
    model's step)."""
    parts = [source.batch(size) for source, size in
             zip(sources, shares_of_batch(batch_size, shares)) if size > 0]
    if len(parts) == 1:
        return parts[0]
    return tf.data.Dataset.zip(tuple(parts)).map(lambda *rows: tf.concat(rows, axis=0))


def training_rows(paths: RunPaths, hparams: HParams, counts: dict,
                  pseudo_labelled: list[bytes] = ()):
    """``(batches of serialized examples, rows per epoch)``.

    Supervised models read the labelled rows, each objective an equal share of every
    batch, so the few human labels are not drowned by the many rule-based ones. The
    SSL-GAN reads every training product (the unlabelled ones feed the GAN) and
    draws ``labelled_share`` of each batch from those with an exclusive label, the
    ``pseudo_labelled`` products (serialized, self-training's) counting as labelled.
    """
    def rows(objective: str):
        return rows_of(paths, objective, hparams)

    if hparams.model_type == "ssl_gan":
        pool = counts.get(f"{CATALOG}_train", 0)
        if pool == 0:
            raise RuntimeError(f"no training products at all: {counts}")
        if counts.get("exclusive_train", 0) == 0 or hparams.labelled_share == 0:
            return rows(CATALOG).batch(hparams.batch_size), pool
        share = hparams.labelled_share
        if not pseudo_labelled:
            return mixed_batches([rows("exclusive"), rows(CATALOG)], [share, 1 - share],
                                 hparams.batch_size), pool
        pseudo = tf.data.Dataset.from_tensor_slices(list(pseudo_labelled)).shuffle(
            len(pseudo_labelled), seed=hparams.seed, reshuffle_each_iteration=True).repeat()
        # the labelled share split between human- and pseudo-labelled rows as their numbers
        labelled = [counts["exclusive_train"], len(pseudo_labelled)]
        return mixed_batches([rows("exclusive"), pseudo, rows(CATALOG)],
                             [share * n / sum(labelled) for n in labelled] + [1 - share],
                             hparams.batch_size), pool
    present = [o for o in hparams.objectives if counts.get(f"{o}_train", 0) > 0]
    if not present:
        raise RuntimeError(f"no training examples for {list(hparams.objectives)}: {counts}")
    return (mixed_batches([rows(o) for o in present], [1.0] * len(present), hparams.batch_size),
            sum(counts[f"{o}_train"] for o in present))


def batches_for_epoch(batched, hparams: HParams):
    """A function: epoch number -> the dataset the schedule wants then, from ``batched``
    (batches of ``inputs, targets, weights``: ``data.parsed`` over ``training_rows``)."""
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


def steady_rate(epoch_seconds: list[float], rows_per_epoch: int) -> float | None:
    """Training rows a second once running: the median epoch's after the first (whose time
    holds the step's tracing); the first's if it is the only one."""
    steady = sorted(epoch_seconds[1:] or epoch_seconds)
    if not steady:
        return None
    return round(rows_per_epoch / steady[len(steady) // 2], 1)


class ProgressLines(keras.callbacks.Callback):
    """``PRODCAT_PROGRESS`` lines while training: rows done of all epochs', rate, time left;
    ``epoch_seconds``: each epoch's training time, its steps only (this callback's epoch end
    comes before the validation scoring of the callbacks after it)."""

    def __init__(self, progress, rows_per_step: int, steps_per_epoch: int, first_epoch: int):
        super().__init__()
        self.progress, self.rows_per_step = progress, rows_per_step
        self.steps_per_epoch, self.epoch = steps_per_epoch, first_epoch
        self.resumed_rows = first_epoch * steps_per_epoch * rows_per_step
        self.epoch_seconds: list[float] = []
        self._epoch_started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._epoch_started)

    def on_train_batch_end(self, batch, logs=None):
        done = (self.epoch * self.steps_per_epoch + batch + 1) * self.rows_per_step
        self.progress.update(done - self.resumed_rows)


class BestOnValidation(keras.callbacks.Callback):
    """Early stopping on validation macro-F1 of the exclusive head: after each epoch,
    score ``predict(model)`` (predicted class indices) against ``labels`` (averaged with
    ``extra_score(model)`` when given: the other head's figure); keep the best
    weights; stop once ``patience`` epochs have brought no improvement. The state
    survives several ``fit`` calls (one per epoch); ``restore_best`` puts the best
    weights back at the end. ``score(labels, predicted)``, higher better, may replace
    macro-F1 (``predict`` then answers what it reads)."""

    def __init__(self, predict, labels, patience: int, extra_score=None, score=None):
        super().__init__()
        self.predict, self.labels, self.patience = predict, labels, patience
        self.extra_score = extra_score  # model -> another head's score, averaged in
        self.score = score
        # -inf: a score may be below any number (a log-likelihood), the first epoch is kept
        self.best, self.best_epoch, self.best_weights, self.scores = -math.inf, -1, None, []

    def on_epoch_end(self, epoch, logs=None):
        from trainer.metrics import macro_f1

        training = None
        if getattr(self.model, "averages_weights", False):  # scored with the averaged weights
            training = [w.numpy().copy() for w in self.model.weights]
            self.model.use_averaged_weights()
        score = (self.score or macro_f1)(self.labels, self.predict(self.model))
        if self.extra_score is not None:
            score = (score + self.extra_score(self.model)) / 2
        self.scores.append(score)
        if score > self.best:
            self.best, self.best_epoch = score, epoch
            self.best_weights = [w.numpy().copy() for w in self.model.weights]
        if training is not None:  # training goes on from its own weights
            self._assign(training)
        log.info("epoch %d: validation score %.4f (best %.4f at epoch %d)",
                 epoch + 1, score, self.best, self.best_epoch + 1)
        if self.patience and epoch - self.best_epoch >= self.patience:
            self.model.stop_training = True

    @property
    def stopped(self) -> bool:
        return bool(self.patience) and len(self.scores) - 1 - self.best_epoch >= self.patience

    def restore_best(self):
        if self.best_weights is not None:
            self._assign(self.best_weights)

    def _assign(self, values: list) -> None:
        for variable, value in zip(self.model.weights, values):
            variable.assign(value)


def forget_stale_progress(model_dir: str, source: str) -> None:
    """Drop a checkpoint made on another preprocessing output (``source``): its weights
    index other vocabularies, so training starts afresh."""
    progress = model_dir + "training/" + PROGRESS_FILE
    if storage.exists(progress) and storage.read_json(progress).get("source") != source:
        log.warning("the checkpoint in %straining/ was made on another preprocessing output: "
                    "training starts afresh", model_dir)
        storage.remove(model_dir + "training/")


def fit(model, hparams: HParams, dataset_for_epoch, rows_per_epoch: int, model_dir: str,
        best: BestOnValidation | None = None, source: str = "") -> dict:
    """Train epoch by epoch; after each, keep the weights and the epoch reached under
    ``model_dir/training/``, so a restarted train goes on from there. With ``best``
    (early stopping), training stops once validation macro-F1 has stalled for
    ``early_stopping_patience`` epochs and the best epoch's weights are kept (a
    restarted train scores again from the epoch it resumes at)."""
    steps = max(1, math.ceil(rows_per_epoch / hparams.batch_size))
    training_dir = model_dir + "training/"
    done = _restore(model, training_dir, dataset_for_epoch(0))
    board = keras.callbacks.TensorBoard(log_dir=model_dir + "tensorboard")
    history: dict[str, list[float]] = {}
    progress = Progress(f"train {hparams.model_type}",
                        (hparams.epochs - done) * steps * hparams.batch_size, "rows")
    lines = ProgressLines(progress, hparams.batch_size, steps, done)
    callbacks = [board, lines] + ([best] if best is not None else [])
    for epoch in range(done, hparams.epochs):
        result = model.fit(dataset_for_epoch(epoch), epochs=epoch + 1, initial_epoch=epoch,
                           steps_per_epoch=steps, callbacks=callbacks, verbose=2)
        for name, values in result.history.items():
            history.setdefault(name, []).extend(float(v) for v in values)
        save_weights(model, training_dir + WEIGHTS_FILE)
        storage.write_json(training_dir + PROGRESS_FILE, {"epochs_done": epoch + 1,
                                                          "source": source})
        if best is not None and best.stopped:
            log.info("early stop after epoch %d: validation macro-F1 best at epoch %d",
                     epoch + 1, best.best_epoch + 1)
            break
    outcome = {"resumed_at_epoch": done, "history": history,
               "epoch_seconds": [round(t, 3) for t in lines.epoch_seconds],
               "rows_per_second": steady_rate(lines.epoch_seconds, steps * hparams.batch_size)}
    if best is not None and best.scores:
        best.restore_best()
        outcome["early_stopping"] = {"best_epoch": done + best.best_epoch + 1,
                                     "best_valid_macro_f1": round(best.best, 4),
                                     "epochs_run": done + len(best.scores)}
    return outcome


def _restore(model, training_dir: str, sample) -> int:
    if not storage.exists(training_dir + PROGRESS_FILE):
        return 0
    done = int(storage.read_json(training_dir + PROGRESS_FILE)["epochs_done"])
    inputs = next(iter(sample))[0]
    model(inputs)  # build the variables before loading into them
    load_weights(model, training_dir + WEIGHTS_FILE)
    log.info("resuming after epoch %d from %s", done, training_dir)
    return done


def save_weights(model, target: str) -> None:
    """A Keras model's weights to ``target`` (a ``.weights.h5`` path, local or ``gs://``)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, WEIGHTS_FILE)
        model.save_weights(local)
        storage.upload(local, target)


def load_weights(model, source: str) -> None:
    """``save_weights``' file back into a model of the same shape."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, WEIGHTS_FILE)
        storage.download(source, local)
        model.load_weights(local)
