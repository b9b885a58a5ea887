"""tf.data input pipelines over the Beam job's TFRecords, shaped for the model.

TF-IDF features arrive as sparse (term id, weight) pairs and stay sparse: one
``tf.SparseTensor`` [batch, vocabulary] per text field, which the model's first layer
multiplies without ever making it dense (``trainer.model.dense_layer``); labels become a class index (exclusive) or a multi-hot
vector (rule_based), each with a 0/1 weight that masks products without it. The multi-hot
vector can stay sparse too (``sparse_rules``): a product has a handful of a taxonomy's
thousands of rule categories, and the SSL-GAN's losses read them as they are.
"""
from __future__ import annotations

import functools

import tensorflow as tf

from shared_config import storage
from shared_config.features import FeatureConfig
from shared_config.paths import RunPaths


class Vocabularies:
    """Sizes and contents of the vocabularies the transform function learnt."""

    def __init__(self, tft_output, config: FeatureConfig):
        self.tft_output = tft_output
        self.config = config

    def input_size(self, feature) -> int:
        return feature.vocab_size + self.config.num_oov_buckets

    def labels(self, objective: str) -> list[str]:
        return [v.decode("utf-8") for v in self.tft_output.vocabulary_by_name(objective)]


def tfrecord_files(paths: RunPaths, objective: str, split: str) -> list[str]:
    files = storage.glob(paths.tfrecord_files(objective, split))
    if not files:
        raise FileNotFoundError(f"no TFRecords for {objective}/{split} at {paths.tfrecords(objective, split)}")
    return files


def catalog_files(paths: RunPaths) -> list[str]:
    """Every product's TFRecords, in the one order predict and embed both read them."""
    from shared_config.paths import CATALOG, SPLITS

    return [f for split in SPLITS for f in tfrecord_files(paths, CATALOG, split)]


def _sparse_from_ids(ids: tf.SparseTensor, values, width: int) -> tf.SparseTensor:
    """[batch, width] sparse rows from per-row term ids and their weights."""
    return tf.sparse.reorder(tf.SparseTensor(
        tf.stack([ids.indices[:, 0], ids.values], axis=1), values,
        tf.stack([ids.dense_shape[0], tf.constant(width, tf.int64)])))


def decode_images(encoded: tf.Tensor, size: int) -> tf.Tensor:
    """PNG/JPEG/GIF/BMP bytes [batch] -> [batch, size, size, 1] greyscale in [0, 1]; no image
    -> zeros. The same graph whether it is called inside a ``tf.data`` map or eagerly, batch
    by batch, as the stages that read parsed batches do (``_image_decoder``)."""
    return _image_decoder(size)(encoded)


@functools.cache
def _image_decoder(size: int):
    """One ``tf.function`` per image size: called eagerly, ``tf.map_fn`` would run its
    per-image function in Python, image by image (20 times slower on 512 images)."""
    def one(data):
        return tf.cond(
            tf.strings.length(data) > 0,
            lambda: tf.image.resize(tf.io.decode_image(data, channels=1, expand_animations=False),
                                    [size, size]),
            lambda: tf.zeros([size, size, 1]))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def decode(encoded):
        return tf.map_fn(one, encoded, fn_output_signature=tf.float32) / 255.0

    return decode


def to_model_inputs(batch: dict, vocabs: Vocabularies) -> dict:
    inputs = {}
    for feature in vocabs.config.features:
        if feature.kind == "text":
            ids, weights = batch[f"{feature.name}_ids"], batch[f"{feature.name}_weights"]
            inputs[feature.name] = _sparse_from_ids(ids, weights.values, vocabs.input_size(feature))
        elif feature.kind == "categorical":
            inputs[feature.name] = batch[feature.name]
        elif feature.kind == "image":
            inputs[feature.name] = decode_images(batch[feature.name], feature.image_size)
        else:
            inputs[feature.name] = tf.reshape(batch[feature.name], [-1, 1])
    return inputs


def multi_hot_sparse(ids: tf.SparseTensor, width: int) -> tf.SparseTensor:
    """[batch, width] 0/1 sparse rows from per-row ids, each (row, id) once."""
    rows = ids.indices[:, 0]
    cells, _ = tf.unique(rows * width + ids.values)
    cells = tf.sort(cells)
    multi_hot = tf.SparseTensor(tf.stack([cells // width, cells % width], axis=1),
                                tf.ones_like(cells, tf.float32),
                                tf.stack([ids.dense_shape[0], tf.constant(width, tf.int64)]))
    multi_hot.set_shape([None, width])
    return multi_hot


def pseudo_label_table(labels: dict[str, int]):
    """A lookup table, product id -> exclusive class index (-1 for any other product)."""
    keys = tf.constant(list(labels) or [""], tf.string)
    values = tf.constant(list(labels.values()) or [-1], tf.int64)
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), -1)


def to_targets(batch: dict, objectives, vocabs: Vocabularies, sparse_rules: bool = False,
               pseudo_labels=None):
    """``(targets, weights)``; with ``sparse_rules`` the rule-based multi-hot vector is a
    ``tf.SparseTensor`` (the SSL-GAN reads it so), else dense (Keras' compiled losses).
    ``pseudo_labels`` (``pseudo_label_table``): the exclusive class of products without a
    human label, by id (self-training); a human label always wins."""
    targets, weights = {}, {}
    if "exclusive" in objectives:
        label = batch["exclusive_label"]
        if pseudo_labels is not None:
            label = tf.where(label >= 0, label,
                             tf.cast(pseudo_labels.lookup(batch["id"]), label.dtype))
        targets["exclusive"] = tf.maximum(label, 0)
        weights["exclusive"] = tf.cast(label >= 0, tf.float32)
    if "rule_based" in objectives:
        labels = batch["rule_based_labels"]
        width = len(vocabs.labels("rule_based"))
        multi_hot = multi_hot_sparse(labels, width)
        targets["rule_based"] = multi_hot if sparse_rules else tf.sparse.to_dense(multi_hot)
        counts = tf.math.bincount(tf.cast(labels.indices[:, 0], tf.int32),
                                  minlength=tf.cast(labels.dense_shape[0], tf.int32))
        weights["rule_based"] = tf.cast(counts > 0, tf.float32)
    return targets, weights


def raw_batches(files: list[str], vocabs: Vocabularies, batch_size: int):
    """The transformed features as parsed, batch by batch (ids, group keys, sparse TF-IDF)."""
    spec = vocabs.tft_output.transformed_feature_spec()
    return tf.data.TFRecordDataset(files).batch(batch_size).map(
        lambda s: tf.io.parse_example(s, spec))


def parser(vocabs: Vocabularies, objectives=(), keep_ids: bool = False,
           sparse_rules: bool = False, pseudo_labels=None):
    """serialized examples (a batch) -> ``inputs`` (with ``ids``, or ``targets, weights``
    when objectives are given): parsing happens once per batch, never per row."""
    spec = vocabs.tft_output.transformed_feature_spec()

    def parse(serialized):
        batch = tf.io.parse_example(serialized, spec)
        inputs = to_model_inputs(batch, vocabs)
        if keep_ids:
            return inputs, batch["id"]
        if objectives:
            targets, weights = to_targets(batch, objectives, vocabs, sparse_rules,
                                          pseudo_labels)
            return inputs, targets, weights
        return inputs

    return parse


def records(files: list[str], shuffle: bool = False, repeat: bool = False, seed: int = 0):
    """The serialized examples of ``files``, optionally shuffled and repeated (cheap to mix
    and batch: nothing is parsed yet)."""
    ds = tf.data.TFRecordDataset(files)
    if shuffle:
        ds = ds.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    return ds.repeat() if repeat else ds


def parsed(serialized_batches, vocabs: Vocabularies, objectives=(), keep_ids: bool = False,
           sparse_rules: bool = False, pseudo_labels=None):
    """Batches of serialized examples parsed and shaped for the model, in parallel."""
    return serialized_batches.map(
        parser(vocabs, objectives, keep_ids, sparse_rules, pseudo_labels),
        num_parallel_calls=tf.data.AUTOTUNE)


def dataset(files: list[str], vocabs: Vocabularies, batch_size: int, objectives=(),
            shuffle: bool = False, repeat: bool = False, keep_ids: bool = False, seed: int = 0):
    """Batches of ``inputs`` (and ``targets, weights`` when objectives are given)."""
    return parsed(records(files, shuffle, repeat, seed).batch(batch_size), vocabs, objectives,
                  keep_ids).prefetch(tf.data.AUTOTUNE)
