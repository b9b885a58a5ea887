"""``preprocessing_fn``: raw product features to model inputs, driven by the feature config."""
from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from beam_pipelines.raw_schema import ID_KEY
from shared_config import features

# Anything that is not a letter or a digit separates tokens.
_NOT_WORD = r"[^\p{L}\p{N}]+"


def preprocessing_fn(inputs):
    config = features.load()
    outputs = {ID_KEY: inputs[ID_KEY]}
    for feature in config.features:
        value = inputs[feature.name]
        if feature.kind == "text":
            cleaned = tf.strings.regex_replace(tf.strings.lower(value, encoding="utf-8"),
                                               _NOT_WORD, " ")
            tokens = tf.strings.split(tf.strings.strip(cleaned)).to_sparse()
            ids = tft.compute_and_apply_vocabulary(
                tokens, top_k=feature.vocab_size, num_oov_buckets=config.num_oov_buckets,
                vocab_filename=feature.name)
            term_ids, weights = tft.tfidf(ids, feature.vocab_size + config.num_oov_buckets)
            outputs[f"{feature.name}_ids"] = term_ids
            outputs[f"{feature.name}_weights"] = weights
        elif feature.kind == "categorical":
            outputs[feature.name] = tft.compute_and_apply_vocabulary(
                tf.strings.strip(tf.strings.lower(value, encoding="utf-8")),
                top_k=feature.vocab_size, num_oov_buckets=config.num_oov_buckets,
                vocab_filename=feature.name)
        else:
            scaled = tf.math.log1p(tf.maximum(value, 0.0)) if feature.transform == "log" else value
            outputs[feature.name] = tft.scale_to_z_score(scaled)
    # Labels: vocabularies of the categories seen; "no label" becomes -1 / an empty list.
    exclusive = inputs["exclusive"]
    exclusive_ids = tft.compute_and_apply_vocabulary(exclusive, vocab_filename="exclusive")
    single = tf.SparseTensor(exclusive_ids.indices, exclusive_ids.values,
                             [exclusive_ids.dense_shape[0], 1])
    outputs["exclusive_label"] = tf.reshape(tf.sparse.to_dense(single, default_value=-1), [-1])
    outputs["rule_based_labels"] = tft.compute_and_apply_vocabulary(
        inputs["rule_based"], vocab_filename="rule_based")
    return outputs
