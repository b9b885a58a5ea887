"""``preprocessing_fn``: raw product features to model inputs, driven by the feature config."""
from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from beam_pipelines import text_ops, tfidf
from beam_pipelines.raw_schema import GROUP_KEY, ID_KEY
from shared_config import features


def preprocessing_fn(inputs):
    config = features.load()
    # The listing id, and the group key that decides its split, pass through as they are.
    outputs = {ID_KEY: inputs[ID_KEY], GROUP_KEY: inputs[GROUP_KEY]}
    for feature in config.features:
        value = inputs[feature.name]
        if feature.kind == "text":
            # top-k vocabulary by document frequency and TF-IDF, in one analysis pass
            term_ids, weights = tfidf.tfidf(text_ops.tokens(value), feature.vocab_size,
                                            config.num_oov_buckets, vocab_filename=feature.name)
            outputs[f"{feature.name}_ids"] = term_ids
            outputs[f"{feature.name}_weights"] = weights
        elif feature.kind == "categorical":
            outputs[feature.name] = tft.compute_and_apply_vocabulary(
                text_ops.clean(value), top_k=feature.vocab_size,
                num_oov_buckets=config.num_oov_buckets, vocab_filename=feature.name)
        elif feature.kind == "dense":
            scaled = tf.math.log1p(tf.maximum(value, 0.0)) if feature.transform == "log" else value
            outputs[feature.name] = tft.scale_to_z_score(scaled, name=f"{feature.name}_z")
        else:  # image: the fetched bytes, decoded by the trainer
            outputs[feature.name] = value
    # Labels: vocabularies of the categories seen; "no label" becomes -1 / an empty list.
    exclusive_ids = tft.compute_and_apply_vocabulary(inputs["exclusive"], vocab_filename="exclusive")
    single = tf.SparseTensor(exclusive_ids.indices, exclusive_ids.values,
                             [exclusive_ids.dense_shape[0], 1])
    outputs["exclusive_label"] = tf.reshape(tf.sparse.to_dense(single, default_value=-1), [-1])
    outputs["rule_based_labels"] = tft.compute_and_apply_vocabulary(
        inputs["rule_based"], vocab_filename="rule_based")
    return outputs
