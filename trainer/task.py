"""What each controller command does: train, evaluate, predict, export."""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from beam_pipelines.raw_schema import raw_feature_spec
from shared_config import features, storage
from shared_config.categories import ancestors_and_self
from shared_config.cli import Progress
from shared_config.paths import CATALOG, OBJECTIVES, SPLITS, RunPaths
from shared_config.runs import next_prediction_version
from trainer import accelerators, data, metrics, self_training, training
from trainer.accelerators import Accelerator
from trainer.hparams import HParams
from trainer.model import build_model, classifier, model_inputs
from trainer.rule_classes import RuleClassMap
from trainer.ssl_gan import build_ssl_gan

log = logging.getLogger("prodcat.trainer")
MODEL_FILE, HPARAMS_FILE = "model.keras", "hparams.json"
PREDICTIONS_PER_SHARD = 100_000
TOP_K = 5


def vocabularies(paths: RunPaths) -> data.Vocabularies:
    return data.Vocabularies(tft.TFTransformOutput(paths.transform_fn_dir), features.load())


def example_counts(paths: RunPaths) -> dict:
    """The preprocessing job's example counts per objective and split (``{objective}_{split}``)."""
    return storage.read_json(paths.example_counts)


def build(hparams: HParams, vocabs: data.Vocabularies, accelerator: Accelerator | None = None):
    specs = model_inputs(vocabs)
    classes = {objective: len(vocabs.labels(objective)) for objective in OBJECTIVES}
    if hparams.model_type == "ssl_gan":
        return build_ssl_gan(hparams, specs, classes, accelerator, RuleClassMap.build(
            vocabs.labels("rule_based"), vocabs.labels("exclusive")))
    return build_model(hparams, specs, classes, accelerator)


def preprocess_output_id(paths: RunPaths) -> str:
    """Which preprocessing wrote the run's TFRecords (a checkpoint is only good for that one)."""
    if not storage.exists(paths.preprocess_output):
        raise FileNotFoundError(f"no preprocessing output at {paths.preprocess_output}: run "
                                "preprocess first")
    return storage.read_json(paths.preprocess_output)["output_id"]


def train(paths: RunPaths, hparams: HParams, accelerator: Accelerator | None = None,
          role: str = "model") -> dict:
    """Train ``hparams`` on the run's TFRecords; ``accelerator`` from ``accelerators.choose``.

    Training goes on from a checkpoint only if it was made on the same preprocessing
    output; a model and a baseline live in different directories (``role``). With
    self-training (the SSL-GAN's ``self_training_per_class``), a first network labels the
    unlabelled products it is surest of and the model kept is a second, fresh network
    trained with those pseudo-labels too; a restarted train that finds the pseudo-labels
    goes on with the second."""
    keras.utils.set_random_seed(hparams.seed)
    accelerator = accelerator or accelerators.choose()
    vocabs = vocabularies(paths)
    counts = example_counts(paths)
    model_dir = paths.checkpoints(hparams.hparams_id, role)
    source = preprocess_output_id(paths)
    training.forget_stale_progress(model_dir, source)
    storage.write_json(model_dir + HPARAMS_FILE, hparams.to_dict())
    started = time.monotonic()
    self_trains = _self_trains(hparams, counts)
    pseudo_file = model_dir + PSEUDO_LABELS_FILE
    pseudo = storage.read_json(pseudo_file) if self_trains and storage.exists(pseudo_file) \
        else None
    if pseudo is not None and pseudo.get("source") != source:
        log.warning("the pseudo-labels in %s were made on another preprocessing output: "
                    "self-training starts afresh", model_dir)
        storage.remove(pseudo_file)
        if storage.exists(model_dir + SELF_TRAINING_DIR):
            storage.remove(model_dir + SELF_TRAINING_DIR)
        pseudo = None
    if pseudo is not None:
        log.info("self-training: %d pseudo-labels found in %s", len(pseudo["labels"]), model_dir)
    else:
        model, result, pretrained = _train_round(paths, hparams, vocabs, accelerator, counts,
                                                 model_dir, source,
                                                 encoder_dir=model_dir + ENCODER_DIR)
    if self_trains:
        if pseudo is None:
            names = vocabs.labels("exclusive")
            labels, seen = self_training.label_catalogue(
                model, data.tfrecord_files(paths, CATALOG, "train"), vocabs,
                hparams.self_training_per_class, counts.get(f"{CATALOG}_train"),
                rules=hparams.self_training_rules, rule_class_map=model.rule_class_map)
            pseudo = {"source": source, "per_class": hparams.self_training_per_class,
                      "unlabelled_products": seen, "first_round": _round_summary(result),
                      "labels": {product: names[label] for product, label in labels.items()}}
            storage.write_json(pseudo_file, pseudo)
        log.info("self-training: %d pseudo-labels (%d a class at most) of %d unlabelled "
                 "products; training the second network", len(pseudo["labels"]),
                 pseudo["per_class"], pseudo["unlabelled_products"])
        index = {name: i for i, name in enumerate(vocabs.labels("exclusive"))}
        labels = {product: index[name] for product, name in pseudo["labels"].items()}
        keras.utils.set_random_seed(hparams.seed)
        model, result, pretrained = _train_round(paths, _second_round(hparams, pseudo), vocabs,
                                                 accelerator, counts,
                                                 model_dir + SELF_TRAINING_DIR, source, labels,
                                                 encoder_dir=model_dir + ENCODER_DIR)
    _save_model(model.classifier() if hparams.model_type == "ssl_gan" else classifier(model),
                model_dir + MODEL_FILE)
    losses = {name: values[-1] for name, values in result["history"].items()}
    return {"hparams_id": hparams.hparams_id, "model_dir": model_dir, "role": role,
            "preprocess_output_id": source,
            "model_type": hparams.model_type, "accelerator": accelerator.describe(), "schedule": hparams.schedule,
            "rows_per_epoch": result["rows_per_epoch"], "epochs": hparams.epochs,
            "resumed_at_epoch": result["resumed_at_epoch"], "final_losses": losses,
            "epoch_seconds": result["epoch_seconds"], "rows_per_second": result["rows_per_second"],
            **({"early_stopping": result["early_stopping"]} if "early_stopping" in result else {}),
            **({"encoder_pretraining": pretrained} if pretrained else {}),
            **({"self_training": {key: pseudo[key] for key in
                                  ("per_class", "unlabelled_products", "first_round")}
                | {"pseudo_labels": len(pseudo["labels"])}} if self_trains else {}),
            "seconds": round(time.monotonic() - started, 2)}


PSEUDO_LABELS_FILE, SELF_TRAINING_DIR = "pseudo_labels.json", "self_training/"


def _self_trains(hparams: HParams, counts: dict) -> bool:
    """Self-training needs the SSL-GAN, its exclusive head and some human labels to start from."""
    return (hparams.model_type == "ssl_gan" and hparams.self_training_per_class > 0
            and "exclusive" in hparams.objectives and counts.get("exclusive_train", 0) > 0)


def _second_round(hparams: HParams, pseudo: dict) -> HParams:
    """The second network's hyperparameters: the same, or with ``self_training_epochs``
    "first_network" as many epochs as the first network's best and no early stopping
    (when the first stopped early; else as the first)."""
    first = pseudo["first_round"].get("early_stopping")
    if hparams.self_training_epochs != "first_network" or first is None:
        return hparams
    return dataclasses.replace(hparams, epochs=int(first["best_epoch"]),
                               early_stopping_patience=0)


def _round_summary(result: dict) -> dict:
    return {"rows_per_epoch": result["rows_per_epoch"], "epoch_seconds": result["epoch_seconds"],
            **({"early_stopping": result["early_stopping"]} if "early_stopping" in result else {})}


def _train_round(paths: RunPaths, hparams: HParams, vocabs, accelerator: Accelerator,
                 counts: dict, round_dir: str, source: str, pseudo_labels: dict | None = None,
                 *, encoder_dir: str):
    """Build a network and fit it, its progress kept under ``round_dir``;
    ``(model, fit's outcome with rows_per_epoch, encoder pretraining's figures)``.
    ``pseudo_labels``: {product id: class index} from self-training; ``encoder_dir``: where
    the model's pretrained encoder is kept (``_pretrained_encoder``)."""
    pseudo_rows = self_training.examples_of(data.tfrecord_files(paths, CATALOG, "train"),
                                            vocabs, pseudo_labels) if pseudo_labels else []
    rows, per_epoch = training.training_rows(paths, hparams, counts, pseudo_rows)
    with accelerator.strategy.scope():
        model = build(hparams, vocabs, accelerator)
    pretrained = {}
    if hparams.model_type == "ssl_gan" and hparams.encoder_pretrain_epochs and \
            not storage.exists(round_dir + "training/" + training.PROGRESS_FILE):
        pretrained = _pretrained_encoder(model, paths, hparams, vocabs, accelerator, per_epoch,
                                         encoder_dir, source)
    best = _early_stopping(paths, hparams, vocabs)
    # every model's rule-based loss reads the targets sparse (the SSL-GAN's sample of
    # categories needs them dense)
    sparse_rules = not hparams.rule_sampled_categories
    table = data.pseudo_label_table(pseudo_labels) if pseudo_labels else None
    batched = data.parsed(rows, vocabs, hparams.objectives, sparse_rules=sparse_rules,
                          pseudo_labels=table)
    result = training.fit(model, hparams, training.batches_for_epoch(batched, hparams),
                          per_epoch, round_dir, best, source)
    return model, {**result, "rows_per_epoch": per_epoch}, pretrained


def _pretrained_encoder(model, paths: RunPaths, hparams: HParams, vocabs,
                        accelerator: Accelerator, per_epoch: int, encoder_dir: str,
                        source: str) -> dict:
    """The encoder pretrained on every product, once per model: its weights and figures are
    kept in ``encoder_dir``, and a later network of the same model (self-training's second)
    or a restarted train loads them in place of pretraining again (the same seed and rows
    would give the same encoder at the same cost). Kept weights made on another
    preprocessing output (their inputs index other vocabularies) are pretrained afresh;
    other hyperparameters have another model directory (``hparams_id``).
    The answer: pretraining's figures (``SSLGAN.pretrain_encoder``)."""
    record_file = encoder_dir + ENCODER_RECORD_FILE
    record = storage.read_json(record_file) if storage.exists(record_file) else None
    if record is not None and record.get("source") == source:
        training.load_weights(model.encoder, encoder_dir + ENCODER_WEIGHTS_FILE)
        log.info("encoder pretraining: the pretrained encoder in %s loaded", encoder_dir)
        return record["figures"]
    pool = data.parsed(training.rows_of(paths, CATALOG, hparams).batch(hparams.batch_size),
                       vocabs, hparams.objectives)
    with accelerator.strategy.scope():
        figures = model.pretrain_encoder(pool, max(1, per_epoch // hparams.batch_size),
                                         hparams.encoder_pretrain_epochs)
    training.save_weights(model.encoder, encoder_dir + ENCODER_WEIGHTS_FILE)
    storage.write_json(record_file, {"source": source, "figures": figures})
    return figures


ENCODER_DIR, ENCODER_WEIGHTS_FILE, ENCODER_RECORD_FILE = (
    "encoder/", "pretrained.weights.h5", "pretraining.json")


def _early_stopping(paths: RunPaths, hparams: HParams, vocabs) -> training.BestOnValidation | None:
    """Early stopping on the run's exclusive validation products, when asked for and there;
    with the rule-based objective too, on the mean of both heads' validation macro-F1."""
    if not hparams.early_stopping_patience or "exclusive" not in hparams.objectives:
        return None
    if example_counts(paths).get("exclusive_valid", 0) == 0:
        log.warning("no exclusive validation products: training runs every epoch")
        return None
    batches = list(data.dataset(data.tfrecord_files(paths, "exclusive", "valid"), vocabs, 512,
                                ["exclusive"]))
    labels = np.concatenate([targets["exclusive"].numpy() for _, targets, _ in batches])

    def predict(model):
        return np.concatenate([np.asarray(model(inputs, training=False)["exclusive"]).argmax(1)
                               for inputs, _, _ in batches])

    return training.BestOnValidation(predict, labels, hparams.early_stopping_patience,
                                     _rule_based_score(paths, hparams, vocabs))


RULE_SCORE_BATCHES = 10  # early stopping reads at most 5,120 rule-labelled validation products


def _rule_based_score(paths: RunPaths, hparams: HParams, vocabs):
    """model -> the rule-based head's validation macro-F1, when that head is trained: both
    heads' predictions go to the store, so the epoch kept must serve both."""
    if "rule_based" not in hparams.objectives or \
            example_counts(paths).get("rule_based_valid", 0) == 0:
        return None
    batches = list(data.dataset(data.tfrecord_files(paths, "rule_based", "valid"), vocabs, 512,
                                ["rule_based"]).take(RULE_SCORE_BATCHES))
    labels = np.concatenate([targets["rule_based"].numpy() for _, targets, _ in batches])

    def score(model):
        # the model in training answers with the rule-based logits
        scores = np.concatenate([_sigmoid(model(inputs, training=False)["rule_based"])
                                 for inputs, _, _ in batches])
        return metrics.rule_based_macro_f1(labels, scores, hparams.rule_threshold)

    return score


def _sigmoid(logits) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(logits, dtype="float32")))


def evaluate(paths: RunPaths, hparams_id: str, split: str, role: str = "model") -> dict:
    model, hparams = load_trained(paths, hparams_id, role)
    vocabs = vocabularies(paths)
    counts = example_counts(paths)
    result = {"hparams_id": hparams_id, "split": split, "objectives": {}}
    for objective in hparams.objectives:
        if counts.get(f"{objective}_{split}", 0) == 0:
            log.warning("no %s examples in %s: skipped", objective, split)
            continue
        ds = data.dataset(data.tfrecord_files(paths, objective, split), vocabs, 512, [objective])
        labels, probabilities = [], []
        for inputs, targets, _ in ds:
            labels.append(targets[objective].numpy())
            probabilities.append(model(inputs, training=False)[objective].numpy())
        labels, probabilities = np.concatenate(labels), np.concatenate(probabilities)
        names = vocabs.labels(objective)
        if objective == "exclusive":
            result["objectives"][objective] = metrics.exclusive_metrics(labels, probabilities, names)
        else:
            result["objectives"][objective] = metrics.rule_based_metrics(
                labels, probabilities, names, hparams.rule_threshold)
    model_dir = paths.checkpoints(hparams_id, role)
    storage.write_json(model_dir + f"metrics_{split}.json", result)
    if result["objectives"]:
        with tempfile.TemporaryDirectory() as tmp:
            metrics.plot_per_class_f1(result, os.path.join(tmp, "f1.png"))
            storage.upload(os.path.join(tmp, "f1.png"), model_dir + f"metrics_{split}.png")
    return result


def _catalog_count(paths: RunPaths) -> int:
    counts = example_counts(paths)
    return sum(counts.get(f"{CATALOG}_{split}", 0) for split in SPLITS)


def predict(paths: RunPaths, hparams_id: str, role: str = "model") -> dict:
    """Score every product; stream predictions to gzipped JSON-lines shards.

    Each record: the product id, the run id and the prediction set's version (newer
    for a newer run, and for a later predict in the same run: the store keeps the
    newest), the model, and per objective the top categories with scores and the
    predicted category's path.
    """
    model, hparams = load_trained(paths, hparams_id, role)
    vocabs = vocabularies(paths)
    names = {o: vocabs.labels(o) for o in hparams.objectives}
    files = data.catalog_files(paths)
    for stale in storage.glob(paths.predictions_dir + "part-*") + storage.glob(
            paths.publish_progress_dir + "*"):  # an earlier predict's, never half of each
        storage.remove(stale)
    version = next_prediction_version(paths)
    progress = Progress("predict", _catalog_count(paths), "products")
    top = _top_categories(model, hparams.objectives)
    category_paths = {o: [ancestors_and_self(name) for name in names[o]] for o in names}
    with storage.ShardedJsonlWriter(paths.predictions_dir, PREDICTIONS_PER_SHARD) as shards:
        for inputs, ids in data.dataset(files, vocabs, 512, keep_ids=True):
            best = {o: (scores.numpy(), indices.numpy()) for o, (scores, indices)
                    in top(inputs).items()}
            for row, product_id in enumerate(ids.numpy()):
                record = {"id": product_id.decode("utf-8"), "run_id": paths.run_id,
                          "version": version, "model": hparams_id}
                record.update(_describe(best, row, names, category_paths,
                                         hparams.rule_threshold))
                shards.write(record)
            progress.update(shards.records)
    return {"predictions": shards.records, "shards": shards.shards, "version": version,
            "predictions_dir": paths.predictions_dir}


def _top_categories(model, objectives):
    """inputs -> per objective ``(scores, indices)`` of its ``TOP_K`` best categories, best
    first (of equal scores, the lower index first), in one traced graph: only those leave
    it, not a score for each of thousands of rule categories a product."""
    @tf.function(reduce_retracing=True)
    def top(inputs):
        outputs = model(inputs, training=False)
        return {o: tuple(tf.math.top_k(outputs[o], k=min(TOP_K, outputs[o].shape[-1])))
                for o in objectives}

    return top


def _describe(best: dict, row: int, names: dict, category_paths: dict,
              threshold: float) -> dict:
    """The top categories of one product, from its objectives' ``(scores, indices)`` best
    first; ``path``: the category with its ancestors."""
    record = {}
    if "exclusive" in best:
        scores, indices = best["exclusive"][0][row], best["exclusive"][1][row]
        top = [{"category": names["exclusive"][i], "score": round(float(s), 4)}
               for s, i in zip(scores, indices)]
        record["exclusive"] = {**top[0], "path": category_paths["exclusive"][indices[0]],
                               "top": top}
    if "rule_based" in best:
        scores, indices = best["rule_based"][0][row], best["rule_based"][1][row]
        record["rule_based"] = [{"category": names["rule_based"][i], "score": round(float(s), 4),
                                 "path": category_paths["rule_based"][i]}
                                for s, i in zip(scores, indices) if s >= threshold]
    return record


class _ServingModule(tf.Module):
    """Raw serialized tf.Examples in, class probabilities out: TF Transform applied inside."""

    def __init__(self, model, tft_output, vocabs):
        super().__init__()
        self.model = model
        self.transform_layer = tft_output.transform_features_layer()
        self.vocabs = vocabs
        spec = raw_feature_spec(vocabs.config)
        self.raw_spec = {
            name: tf.io.FixedLenFeature([], f.dtype, default_value="" if f.dtype == tf.string else 0.0)
            if isinstance(f, tf.io.FixedLenFeature) else f for name, f in spec.items()}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        raw = tf.io.parse_example(examples, self.raw_spec)
        transformed = self.transform_layer(raw)
        return dict(self.model(data.to_model_inputs(transformed, self.vocabs), training=False))


def export(paths: RunPaths, hparams_id: str, role: str = "model") -> dict:
    model, _ = load_trained(paths, hparams_id, role)
    vocabs = vocabularies(paths)
    module = _ServingModule(model, vocabs.tft_output, vocabs)
    target = paths.checkpoints(hparams_id, role) + "saved_model"
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
        storage.upload(tmp, target)
    return {"hparams_id": hparams_id, "saved_model": target}


def _save_model(model, target: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        model.save(local)
        storage.upload(local, target)


def load_trained(paths: RunPaths, hparams_id: str, role: str = "model"):
    model_dir = paths.checkpoints(hparams_id, role)
    if not storage.exists(model_dir + MODEL_FILE):
        raise FileNotFoundError(f"no trained model at {model_dir}{MODEL_FILE}: run train first")
    hparams = HParams.from_dict(storage.read_json(model_dir + HPARAMS_FILE))
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        storage.download(model_dir + MODEL_FILE, local)
        return keras.models.load_model(local), hparams
